"""Export the query side of a sentence-transformers encoder to ONNX, for :class:`retriever.encoders.onnx_query.OnnxQueryEncoder`.

```python
from retriever.encoders.base import load_encoder
from retriever.encoders.onnx_export import export_query_encoder
files = export_query_encoder(load_encoder("minilm", device="cpu"), Path("index/onnx"))
# {"graph": "query_encoder.onnx", "tokenizer": "query_tokenizer.json", "inputs": [...], "dim": 384, ...}
```

The graph is the model's own query route (``SentenceTransformer.forward(..., task="query")``: Transformer, the
Pooling its config names, Dense/Normalize modules, a Router's query modules) traced by the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``), plus ``truncate_dim`` and L2 normalization when the encoder
normalizes: inputs ``input_ids``, ``attention_mask`` [, ``token_type_ids``] (int64, ``(batch, sequence)``, both
axes dynamic), output ``embedding`` (float32, ``(batch, dim)``). The tokenizer is the model's fast tokenizer as
``tokenizers`` JSON, with the truncation length and padding that sentence-transformers applies.
This module imports torch; the runtime side (:mod:`retriever.encoders.onnx_query`) does not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexing.errors import ModelError

log = logging.getLogger(__name__)

GRAPH_FILE = "query_encoder.onnx"
TOKENIZER_FILE = "query_tokenizer.json"
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "embedding"
_CHECK_TEXTS = ["a", "a longer query, to check that the traced graph is not specialised to one shape " * 3, "x y z"]


def export_query_encoder(encoder: Any, out: Path) -> dict[str, Any]:
    """Write the query encoder's ONNX graph and tokenizer into the folder ``out`` (created if needed).

    Args:
        encoder: a :class:`retriever.encoders.base.SentenceTransformerEncoder` (any device/precision: a CPU fp32 copy
            is exported), a :class:`retriever.encoders.crosslingual.transliterate.TransliteratingEncoder` around one (romanization
            stays a runtime step), or a manifest's ``encoder`` record (a dict, loaded with
            :func:`retriever.encoders.base.encoder_from_manifest`).
        out: the folder; :data:`GRAPH_FILE` and :data:`TOKENIZER_FILE` are written in a temporary folder inside it,
            checked, then each renamed into place (a failed export leaves the old files).

    Returns:
        ``{"graph": GRAPH_FILE, "tokenizer": TOKENIZER_FILE, "sha256": {file: hex}, "inputs": [names],
        "dim": int, "normalized": bool, "pooling": str, "max_seq_length": int, "opset": int, "torch": version}``.
        The same model, torch and tokenizers versions give byte-identical files.

    Raises:
        ModelError: the model cannot be loaded or exported (one line saying why), or the exported graph
            disagrees with the model.
    """
    st_encoder = _cpu_fp32(encoder)
    model = st_encoder.model
    transformer = _query_transformer(model)
    tokenizer = _runtime_tokenizer(transformer)
    input_names = [name for name in INPUTS if name in transformer.tokenizer.model_input_names]
    if input_names[:2] != ["input_ids", "attention_mask"]:
        raise ModelError(f"cannot export {st_encoder.name!r}: tokenizer inputs {transformer.tokenizer.model_input_names}")
    graph = _QueryGraph(model, input_names, normalize=st_encoder.normalized, truncate_dim=model.truncate_dim).eval()
    dummy = _feeds(tokenizer, ["dense retrieval", "a second, longer example query"], input_names)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(model, tokenizer, input_names, st_encoder)
    done = _EXPORTED.get(model)
    if done is not None and done[0] == fingerprint and all((done[1] / name).is_file() for name in (GRAPH_FILE, TOKENIZER_FILE)):
        _place(done[1], out)  # this model, unchanged, was exported in this process already (a build's OpenVINO documents)
        log.info("copied the query encoder of %s, exported earlier, to %s", st_encoder.name, out)
        return dict(done[2])
    tmp = out / f".onnx-export-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape checks that hold for every input
                torch.onnx.export(
                    graph, tuple(torch.from_numpy(dummy[n]) for n in input_names), str(tmp / GRAPH_FILE),
                    input_names=input_names, output_names=[OUTPUT], opset_version=OPSET, dynamo=False,
                    dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in input_names}, OUTPUT: {0: "batch"}},
                    do_constant_folding=True,
                )
        except Exception as exc:  # noqa: BLE001 - any exporter failure is "this model cannot be exported"
            raise ModelError(f"cannot export {st_encoder.name!r} to ONNX: {_one_line(exc)}") from None
        extra = sorted(p.name for p in tmp.iterdir() if p.name != GRAPH_FILE)
        if extra:  # weights over 2 GB go to external data files
            raise ModelError(f"cannot export {st_encoder.name!r} to ONNX: the graph needs external data files {extra}")
        _fix_output_width(tmp / GRAPH_FILE, st_encoder.dim)
        (tmp / TOKENIZER_FILE).write_text(tokenizer.to_str(), encoding="utf-8")
        _check(graph, tmp, tokenizer, input_names, st_encoder.name)
        for name in (GRAPH_FILE, TOKENIZER_FILE):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the query encoder of %s to %s", st_encoder.name, out)
    record = {
        "graph": GRAPH_FILE,
        "tokenizer": TOKENIZER_FILE,
        "sha256": {name: _sha256(out / name) for name in (GRAPH_FILE, TOKENIZER_FILE)},
        "inputs": input_names,
        "dim": st_encoder.dim,
        "normalized": st_encoder.normalized,
        "pooling": st_encoder.pooling,
        "max_seq_length": tokenizer.truncation["max_length"] if tokenizer.truncation else None,
        "opset": OPSET,
        "torch": torch.__version__,
    }
    _remember(model, fingerprint, out, record)
    return dict(record)


# A model's export, kept for the life of the model: a bf16 build exports the graph for OpenVINO's documents first and
# writes the index's query encoder at the end; exporting twice cost a build ~200 MiB of peak memory and a few seconds.
_EXPORTED: "weakref.WeakKeyDictionary[Any, tuple[tuple, Path, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _fingerprint(model: Any, tokenizer: Any, input_names: list[str], encoder: Any) -> tuple:
    """What an export of ``model`` depends on: every parameter's storage and in-place version (training changes
    them), the runtime tokenizer (truncation included), the inputs, normalization, ``truncate_dim`` and width."""
    weights = tuple((p.data_ptr(), p._version) for p in model.parameters())  # noqa: SLF001 - torch's write counter
    return (weights, hashlib.sha256(tokenizer.to_str().encode()).hexdigest(), tuple(input_names),
            encoder.normalized, model.truncate_dim, encoder.dim)


def _remember(model: Any, fingerprint: tuple, out: Path, record: dict[str, Any]) -> None:
    """Keep a copy of the files just written to ``out`` in a temporary folder removed with ``model`` (or at exit)."""
    earlier = _EXPORTED.get(model)
    if earlier is not None:
        shutil.rmtree(earlier[1], ignore_errors=True)
    keep = Path(tempfile.mkdtemp(prefix="retriever-onnx-"))
    for name in (GRAPH_FILE, TOKENIZER_FILE):
        shutil.copyfile(out / name, keep / name)
    _EXPORTED[model] = (fingerprint, keep, dict(record))
    weakref.finalize(model, shutil.rmtree, str(keep), True)


def _place(source: Path, out: Path) -> None:
    """Copy the graph and tokenizer from ``source`` into ``out``, each renamed into place."""
    tmp = out / f".onnx-copy-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for name in (GRAPH_FILE, TOKENIZER_FILE):
            shutil.copyfile(source / name, tmp / name)
        for name in (GRAPH_FILE, TOKENIZER_FILE):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu_fp32(encoder: Any):
    """A SentenceTransformerEncoder on the CPU in fp32 for ``encoder`` (itself when it is one already)."""
    from retriever.encoders.base import SentenceTransformerEncoder, encoder_from_manifest

    if isinstance(encoder, dict):
        encoder = encoder_from_manifest(encoder, device="cpu")
    encoder = getattr(encoder, "inner", encoder)  # TransliteratingEncoder: romanizing is the runtime's job
    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ModelError(f"cannot export a {type(encoder).__name__} to ONNX (a sentence-transformers encoder is needed)")
    if encoder.device != "cpu":  # documents use a half copy; the model itself (queries) is fp32 already
        encoder = SentenceTransformerEncoder(encoder.spec, device="cpu", normalize=encoder.normalized)
    return encoder


def _query_transformer(model):
    """The Transformer module that reads the query text (the first module, or the first of a Router's query route).

    Raises:
        ModelError: the query route does not start with a text Transformer with a fast tokenizer, or uses
            sentence-transformers features the exported tokenizer cannot reproduce.
    """
    from sentence_transformers.base.modules import Router, Transformer

    first = model[0]
    if isinstance(first, Router):
        routes = first.sub_modules  # a torch ModuleDict of Sequentials
        key = "query" if "query" in routes else first.default_route
        if key not in routes:
            raise ModelError(f"cannot export to ONNX: the model's Router has no query route ({sorted(first.sub_modules)})")
        first = routes[key][0]
    if not isinstance(first, Transformer):
        raise ModelError(f"cannot export to ONNX: the query route starts with {type(first).__name__}, not a Transformer")
    tok = first.tokenizer
    if tok is None or not getattr(tok, "is_fast", False):
        raise ModelError("cannot export to ONNX: the model has no fast (Rust) tokenizer")
    if getattr(first, "query_expansion", None) is not None or "message" in first.modality_config:
        raise ModelError("cannot export to ONNX: query expansion and chat templates are not supported")
    return first


def _runtime_tokenizer(transformer):
    """A copy of the model's ``tokenizers.Tokenizer`` set to truncate and pad as sentence-transformers does."""
    from tokenizers import Tokenizer

    hf = transformer.tokenizer
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    limit = transformer.query_length or hf.model_max_length
    tok.no_truncation()
    if limit and limit < 1_000_000:  # transformers' "no limit" is a huge sentinel
        tok.enable_truncation(max_length=int(limit), strategy="longest_first", direction=hf.truncation_side)
    tok.enable_padding(direction=hf.padding_side, pad_id=hf.pad_token_id or 0, pad_type_id=hf.pad_token_type_id,
                       pad_token=hf.pad_token or "[PAD]")
    return tok


def _feeds(tokenizer, texts: list[str], input_names: list[str]) -> dict[str, np.ndarray]:
    """The graph's int64 ``(batch, sequence)`` inputs for ``texts`` (the runtime's own recipe)."""
    from retriever.encoders.onnx_query import tokenize

    return tokenize(tokenizer, texts, input_names)


def _check(graph, folder: Path, tokenizer, input_names: list[str], name: str) -> None:
    """Run the exported graph with onnxruntime on other shapes than the trace's and compare with torch."""
    import onnxruntime as ort

    feeds = _feeds(tokenizer, _CHECK_TEXTS, input_names)
    with torch.no_grad():
        want = graph(*(torch.from_numpy(feeds[n]) for n in input_names)).numpy()
    session = ort.InferenceSession(str(folder / GRAPH_FILE), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], feeds)[0]
    scale = float(np.abs(want).max()) or 1.0
    error = float(np.abs(got - want).max()) / scale
    if got.shape != want.shape or error > 1e-3:
        raise ModelError(f"the ONNX graph of {name!r} disagrees with the model (relative error {error:.2g})")


def _fix_output_width(path: Path, dim: int) -> None:
    """Write ``dim`` into the graph's output shape, where the exporter may leave a symbolic name (after Dense,
    Pooling(cls)), so that a reader sees ``(batch, dim)``."""
    import onnx

    graph = onnx.load(str(path))
    width = graph.graph.output[0].type.tensor_type.shape.dim[1]
    if width.HasField("dim_value") and width.dim_value == dim:
        return
    width.Clear()
    width.dim_value = dim
    onnx.save(graph, str(path))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _QueryGraph(torch.nn.Module):
    """``(input_ids, attention_mask[, token_type_ids]) -> (batch, dim)`` float32: the model's query route,
    ``truncate_dim``, then L2 normalization when ``normalize`` (as ``SentenceTransformer.encode`` does)."""

    def __init__(self, model, input_names: list[str], *, normalize: bool, truncate_dim: int | None):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.normalize = normalize
        self.truncate_dim = truncate_dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.input_names, inputs))
        vectors = self.model(features, task="query")["sentence_embedding"]
        if self.truncate_dim:
            vectors = vectors[:, : self.truncate_dim]
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float()
