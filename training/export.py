"""Loading the base model to train and writing the trained one as a sentence-transformers folder.

Whatever the base, the trained model is ``Transformer -> Pooling(mean) -> Normalize``: what the loss trains
(cosine similarity of mean-pooled tokens) is exactly what ``SentenceTransformer(OUT)`` and
``retriever index build --model OUT`` compute.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexing.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModel:
    """The model a run starts from.

    Attributes:
        name: what ``--base`` said (``minilm``, a folder, a hub id, ``scratch``).
        path: the folder or hub id loaded.
        query_prefix, document_prefix: the base's prefixes (e5's ``query: ``/``passage: ``), kept by training.
        preset: the encoder preset the trained model is recorded with (the base's, or the objective's).
    """

    name: str
    path: str
    query_prefix: str = ""
    document_prefix: str = ""
    preset: str = "text"


def resolve_base(base: str) -> BaseModel:
    """Resolve ``--base`` with :func:`retriever.models.resolve.resolve_model` (raises ModelError)."""
    from retriever.models.resolve import resolve_model

    spec = resolve_model(base)
    return BaseModel(base, spec.path, spec.query_prefix, spec.document_prefix, spec.preset)


def load_encoder_for_training(path: str, *, max_tokens: int, device: str = "cpu"):
    """A ``SentenceTransformer`` of ``Transformer -> Pooling(mean) -> Normalize`` built from ``path``.

    ``path`` is a sentence-transformers folder (its first module must be a Transformer; another pooling is
    replaced by mean pooling, with a warning) or a plain Hugging Face model folder/hub id.

    Raises:
        ModelError: the model cannot be loaded, or ``max_tokens`` exceeds its position embeddings.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    try:
        if (Path(path) / "modules.json").is_file():
            loaded = SentenceTransformer(path, device="cpu")
            transformer = loaded[0]
            if not isinstance(transformer, Transformer):
                raise ModelError(f"{path}: the first module is {type(transformer).__name__}, not a Transformer")
            pooling = [getattr(m, "pooling_mode", None) for m in loaded if isinstance(m, Pooling)]
            if pooling and pooling[0] != "mean":
                log.warning("%s pools with %s; the trained model uses mean pooling", path, pooling[0])
        else:
            transformer = Transformer(path, max_seq_length=max_tokens)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from None
    positions = getattr(transformer.auto_model.config, "max_position_embeddings", None)
    if positions is not None and max_tokens > positions:
        raise ModelError(f"--max-tokens {max_tokens} exceeds the model's {positions} positions")
    dim = transformer.get_embedding_dimension()
    return SentenceTransformer(modules=[transformer, Pooling(dim, pooling_mode="mean"), Normalize()], device=device)


def asymmetric_model(query_encoder, document_encoder):
    """One ``SentenceTransformer`` that embeds queries with ``query_encoder`` and documents with
    ``document_encoder`` (both SentenceTransformers), through sentence-transformers' ``Router``: ``encode_query``,
    ``encode_document`` and ``encode(..., task=...)`` pick the route; a plain ``encode`` takes the document route.

    The modules are shared with the two encoders, not copied.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    router = Router.for_query_document(query_modules=list(query_encoder), document_modules=list(document_encoder))
    return SentenceTransformer(modules=[router], device=str(next(query_encoder.parameters()).device))


def save_model_folder(model, folder: Path, *, base: BaseModel, extra_files: dict[str, str] | None = None,
                      training: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a sentence-transformers folder with ``retriever.json`` (the base's preset, the base and
    its prefixes, and ``training``: how it was trained, e.g. ``{"precision": "bf16"}``), atomically: written beside
    ``folder`` and renamed into place (an old folder is replaced).
    """
    from retriever.models.resolve import write_model_card

    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(str(tmp), create_model_card=False)
    write_model_card(tmp, preset=base.preset, base=base.name, query_prefix=base.query_prefix, document_prefix=base.document_prefix,
                     training=training)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    old = folder.with_name(f".old-{folder.name}")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def publish(source: Path, out: Path) -> None:
    """Copy the files of a model folder into ``out`` (the output folder also holds ``checkpoints/``)."""
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        target = out / item.name
        if item.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(item, target)
        else:
            tmp = out / f".tmp-{item.name}"
            shutil.copy2(item, tmp)
            os.replace(tmp, target)
