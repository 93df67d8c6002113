"""Which encoder answers an index's queries: the torch-free ONNX graph stored in the index, or torch.

An index folder may hold its model's query side as an ONNX graph and a ``tokenizers`` file (manifest roles
``query_encoder`` and ``query_tokenizer``), written by ``retriever index build`` or, for an existing index, by
``retriever index query-encoder IDX`` (both writers: they hold the index's lock). Readers never create them.

Backends: ``auto`` (the ONNX graph when the index has one, else torch, saying so once), ``onnx`` (the graph,
or a one-line error), ``torch`` (the sentence-transformers model the index was built with).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from indexing.errors import ModelError, RetrieverError
from indexing.manifest import Manifest

log = logging.getLogger(__name__)

QueryBackend = Literal["auto", "onnx", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "onnx", "torch")
GRAPH_ROLE, TOKENIZER_ROLE = "query_encoder", "query_tokenizer"


def has_onnx_query_encoder(manifest: Manifest) -> bool:
    return GRAPH_ROLE in manifest.files and TOKENIZER_ROLE in manifest.files


def load_query_encoder(
    path: Path,
    manifest: Manifest,
    *,
    backend: QueryBackend = "auto",
    device: str = "auto",
    announce: Callable[[str], None] | None = None,
) -> Any:
    """The query encoder of the committed index at ``path`` for ``backend`` (see the module docstring).

    ``auto`` uses torch when ``device`` names a CUDA device (the graph runs on the CPU).

    Raises:
        RetrieverError: an unknown backend, or ``onnx`` for an index without a graph.
        ModelError: the index was built from vectors without a model, or the model/graph cannot be loaded.
    """
    if backend not in BACKENDS:
        raise RetrieverError(f"--query-backend {backend!r}: use {', '.join(BACKENDS)}")
    if not manifest.encoder.get("model") and not manifest.encoder.get("path"):
        raise ModelError(f"{path} was built from vectors without a model; search it by vector")
    graph = has_onnx_query_encoder(manifest)
    if backend == "onnx" and not graph:
        raise RetrieverError(f"{path}: the index has no ONNX query encoder; add one with "
                             f"`retriever index query-encoder {path}` or use --query-backend torch")
    if graph and (backend == "onnx" or (backend == "auto" and not device.startswith("cuda"))):
        from retriever.encoders.onnx_query import OnnxQueryEncoder

        return OnnxQueryEncoder(path / manifest.files[GRAPH_ROLE], path / manifest.files[TOKENIZER_ROLE], manifest.encoder)
    if backend == "auto" and not device.startswith("cuda") and announce is not None:
        announce(f"note: {path} has no ONNX query encoder, so queries load torch (slow to start); "
                 f"`retriever index query-encoder {path}` adds one")
    from retriever.encoders.base import encoder_from_manifest

    return encoder_from_manifest(manifest.encoder, device=device)


def write_query_encoder(encoder: Any) -> Callable[[Path, Manifest, str], dict[str, str]]:
    """A writer for :func:`indexing.updates.attach_files`: exports ``encoder``'s query side into the index folder
    under the writer's tag (``query.<tag>.onnx`` and ``query.<tag>.tokenizer.json``).

    Raises:
        ModelError: the model cannot be exported (one line saying why).
    """

    def write(path: Path, draft: Manifest, tag: str) -> dict[str, str]:
        from retriever.encoders.onnx_export import GRAPH_FILE, TOKENIZER_FILE, export_query_encoder

        scratch = path / f"query.{tag}.export"
        try:
            export_query_encoder(encoder, scratch)
            names = {GRAPH_ROLE: f"query.{tag}.onnx", TOKENIZER_ROLE: f"query.{tag}.tokenizer.json"}
            (scratch / GRAPH_FILE).rename(path / names[GRAPH_ROLE])
            (scratch / TOKENIZER_FILE).rename(path / names[TOKENIZER_ROLE])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return names

    return write


def add_query_encoder(path: Path, *, encoder: Any | None = None, wait: float = 0.0, command: str = "index query-encoder") -> Manifest:
    """Export the index's query encoder to ONNX and commit it into the index (a writer: holds the lock).

    Args:
        encoder: the loaded encoder the index was built with (default: loaded from the manifest, on the CPU).

    Raises:
        ModelError: the model cannot be loaded or exported. IndexLockedError: another writer holds the index.
    """
    from indexing.lock import writer_lock
    from indexing.manifest import read_manifest
    from indexing.updates import attach_files

    with writer_lock(path, command, wait=wait):
        if encoder is None:
            from retriever.encoders.base import encoder_from_manifest

            manifest = read_manifest(path)
            if not manifest.encoder.get("model") and not manifest.encoder.get("path"):
                raise ModelError(f"{path} was built from vectors without a model: there is no query encoder to export")
            encoder = encoder_from_manifest(manifest.encoder, device="cpu")
        return attach_files(path, write_query_encoder(encoder), command=command)
