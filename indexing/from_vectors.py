"""Indexes built from vectors the user already has (``retriever index from-vectors``).

The vectors go through the same build shards, doc store and finalize as a corpus build (``indexing.builder``),
so the result is an ordinary index: resumable, committed atomically, updatable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from indexing.builder import BuildConfig, Progress, _reject_duplicates
from indexing.workspace import finalize, open_workspace
from indexing.docstore import DocStore
from indexing.documents import Document, Passage
from indexing.errors import CorpusError, RetrieverError
from indexing.lock import writer_lock
from indexing.manifest import Manifest
from indexing.shards import write_shard


def build_from_vectors(
    out: Path,
    vectors: np.ndarray,
    ids: Iterable[str],
    config: BuildConfig,
    *,
    encoder_record: dict[str, Any] | None = None,
    documents: Callable[[str], Document] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    wait: float = 0.0,
) -> Manifest:
    """Build an index from vectors the user already has, through the same shards and finalize as a corpus build.

    Holds the writer lock of ``out`` (``wait``: as :func:`build_index`).

    Args:
        vectors: ``(n, dim)`` float32: an array, or an :class:`indexing.npy_file.NpyFile` for a large .npy
            (read block by block with file reads, so memory stays flat).
        ids: ``n`` unique string ids aligned with ``vectors``, consumed lazily (a file's lines, a generator).
        encoder_record: what the manifest records as the encoder (e.g. the model that made the vectors, so
            text queries can be encoded); default: an anonymous encoder (search by vector only).
        documents: optional ``id -> Document`` lookup for titles, text and metadata (default: id only).

    Raises:
        RetrieverError: fewer or more ids than vectors; IndexDirError/CorpusError as :func:`build_index`.
    """
    if vectors.ndim != 2:
        raise RetrieverError(f"vectors must be a 2-d array (n, dim), got shape {vectors.shape}")
    dim, count = int(vectors.shape[1]), int(vectors.shape[0])
    record = encoder_record or {"model": None, "path": None, "preset": None, "dim": dim, "normalized": False}
    with writer_lock(out, "index from-vectors", wait=wait, create=True):
        return _from_vectors_locked(out, vectors, ids, config, record, documents, resume, overwrite, progress)


def _from_vectors_locked(
    out: Path,
    vectors: np.ndarray,
    ids: Iterable[str],
    config: BuildConfig,
    record: dict[str, Any],
    documents: Callable[[str], Document] | None,
    resume: bool,
    overwrite: bool,
    progress: Progress | None,
) -> Manifest:
    dim, count = int(vectors.shape[1]), int(vectors.shape[0])
    work, previous = open_workspace(out, config, resume=resume, overwrite=overwrite)
    store = DocStore(work / "docstore.sqlite", readonly=False)
    try:
        shards = int(store.get_meta("shards_done", "0"))
        store.rollback_shards(shards)
        step = config.docs_per_shard
        id_stream = itertools.islice(iter(ids), shards * step, None)
        for start in range(shards * step, count, step):
            chunk_ids = [str(i).strip() for i in itertools.islice(id_stream, min(step, count - start))]
            if len(chunk_ids) < min(step, count - start):
                raise RetrieverError(f"{count} vectors but only {start + len(chunk_ids)} ids")
            docs = [documents(i) if documents else Document(i, "", "", origin=f"ids:{start + n + 1}") for n, i in enumerate(chunk_ids)]
            _reject_duplicates(store, docs)
            windows = [[Passage(d.id, 0, 0, len(d.text), d.text)] for d in docs]
            first_pid = int(store.get_meta("next_pid", "0"))
            pids = np.arange(first_pid, first_pid + len(docs), dtype=np.int64)
            write_shard(work / "shards", shards, pids, np.asarray(vectors[start : start + step], dtype=np.float32))
            meta = {"shards_done": str(shards + 1), "docs_done": str(start + len(docs))}
            store.add(docs, windows, shard=shards, meta=meta)
            shards += 1
            if progress:
                progress(start + len(docs), start + len(docs))
        if next(id_stream, None) is not None:
            raise RetrieverError(f"more ids than the {count} vectors")
        total = store.count_passages()
    finally:
        store.close()
    if total == 0:
        raise CorpusError("vectors", "empty corpus")
    return finalize(out, work, shards, total, total, record, dim, config, previous)
