"""BM25 beside a dense index: ``INDEX/bm25/`` holds a Lucene index of the doc store's documents.

The BM25 index records (in ``bm25.json``, under ``extra``) the dense manifest's ``content_version`` it
was built from (see :func:`indexing.updates.content_version`: it moves on every add or replace, never on
a delete). While the two agree, the BM25 index is current up to deletions, which searches drop by
checking the doc store; when documents were added or replaced since, it is rebuilt from the doc store.

Nothing here starts Java until a BM25 index is built or opened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from indexing.docstore import DocStore
from indexing.errors import RetrieverError
from indexing.manifest import Manifest, read_manifest
from indexing.updates import content_version
from retriever.bm25 import LuceneBM25, read_bm25_json

logger = logging.getLogger(__name__)

BM25_DIR = "bm25"
_LOCK = ".bm25.lock"  # dot files survive indexing.index_dir.commit
FIRST_USE = "building the BM25 index (first use)..."
STALE = "rebuilding the BM25 index (documents were added or changed since it was built)..."

Bm25State = Literal["current", "stale", "missing"]


def bm25_path(index_path: Path) -> Path:
    """Where the BM25 index of the dense index at ``index_path`` lives."""
    return Path(index_path) / BM25_DIR


def bm25_state(index_path: Path, manifest: Manifest) -> Bm25State:
    """Whether ``INDEX/bm25`` is current for ``manifest`` (reads ``bm25.json`` only; no JVM).

    ``"current"``: built at the manifest's content version (deletions since are fine);
    ``"stale"``: built before documents were added or replaced; ``"missing"``: absent or unreadable.
    """
    info = read_bm25_json(bm25_path(index_path))
    if info is None:
        return "missing"
    built_at = (info.get("extra") or {}).get("content_version")
    return "current" if built_at == content_version(manifest) else "stale"


def _contents(docstore: DocStore) -> Iterator[tuple[str, str]]:
    """``(doc_id, title + " " + text)`` of every stored document (BEIR's flat setting)."""
    for doc in docstore.iter_documents():
        yield doc.id, f"{doc.title} {doc.text}" if doc.title else doc.text


def _writable(path: Path) -> bool:
    """Whether this process may create and rename entries in ``path``."""
    return os.access(path, os.W_OK | os.X_OK)


def _check_writable(index_path: Path, why: str) -> None:
    """Raise RetrieverError (saying how to build BM25 as the index's owner) when ``index_path`` is read-only."""
    if not _writable(index_path):
        raise RetrieverError(
            f"{index_path}: the BM25 index is {why} and the index directory is not writable; "
            f"have its owner run `retriever index bm25 {index_path}` (or build with `retriever index build --bm25`)"
        )


@contextmanager
def _locked(index_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``INDEX/.bm25.lock`` so two processes never build BM25 at once."""
    with open(Path(index_path) / _LOCK, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_bm25(index_path: Path, docstore: DocStore, manifest: Manifest, *, threads: int = 2) -> LuceneBM25:
    """(Re)build ``INDEX/bm25`` from ``docstore`` (the doc store of ``manifest``'s version), atomically.

    Raises:
        RetrieverError: the index directory is read-only, Java/pyserini is missing, the store is empty
            or Lucene indexing failed (the previous BM25 index, if any, is left in place).
    """
    index_path = Path(index_path)
    _check_writable(index_path, "to be (re)built")
    started = time.perf_counter()
    with _locked(index_path):
        bm25 = _build_unlocked(index_path, docstore, manifest, threads)
    logger.info("BM25 index of %d documents built in %.1fs", bm25.num_documents, time.perf_counter() - started)
    return bm25


def _build_unlocked(index_path: Path, docstore: DocStore, manifest: Manifest, threads: int) -> LuceneBM25:
    extra = {"content_version": content_version(manifest), "manifest_version": manifest.version}
    return LuceneBM25.build(_contents(docstore), bm25_path(index_path), threads=threads, extra=extra)


def ensure_bm25(
    index_path: Path,
    docstore: DocStore,
    manifest: Manifest,
    *,
    announce: Callable[[str], None] | None = None,
    threads: int = 2,
) -> LuceneBM25:
    """Open ``INDEX/bm25``, building it first when it is missing or stale (see the module docstring).

    Args:
        index_path: the dense index directory.
        docstore: its doc store, of the version ``manifest`` describes (the documents BM25 indexes).
        manifest: the dense index's committed manifest.
        announce: called with a one-line message (:data:`FIRST_USE` or :data:`STALE`) before a build.
        threads: Lucene indexing threads.

    Raises:
        RetrieverError: a build is needed and the index directory is not writable (the message says to run
            ``retriever index bm25 INDEX``), or Java/pyserini is missing, or indexing failed.
    """
    index_path = Path(index_path)
    state = bm25_state(index_path, manifest)
    if state == "current":
        return LuceneBM25.load(bm25_path(index_path))
    _check_writable(index_path, "missing" if state == "missing" else "out of date (documents were added since)")
    with _locked(index_path):
        state = bm25_state(index_path, manifest)  # another process may have built it meanwhile
        if state != "current":
            if announce is not None:
                announce(FIRST_USE if state == "missing" else STALE)
            logger.info("BM25 index of %s is %s; building it from the doc store", index_path, state)
            return _build_unlocked(index_path, docstore, manifest, threads)
    return LuceneBM25.load(bm25_path(index_path))


def bm25_of(
    index_path: Path,
    *,
    rebuild: bool = False,
    announce: Callable[[str], None] | None = None,
    threads: int = 2,
) -> LuceneBM25:
    """The BM25 index of the committed dense index at ``index_path``: :func:`ensure_bm25`, or with
    ``rebuild`` always :func:`build_bm25` (``retriever index bm25``). Reads the manifest and doc store only
    (the FAISS index is not loaded).

    Raises:
        IndexDirError: no index at ``index_path``. RetrieverError: as :func:`ensure_bm25`.
    """
    index_path = Path(index_path)
    manifest = read_manifest(index_path)
    docstore = DocStore(index_path / manifest.files["docstore"], readonly=True)
    try:
        if rebuild:
            return build_bm25(index_path, docstore, manifest, threads=threads)
        return ensure_bm25(index_path, docstore, manifest, announce=announce, threads=threads)
    finally:
        docstore.close()
