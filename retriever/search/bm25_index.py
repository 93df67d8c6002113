"""BM25 beside a dense index: a Lucene index of the doc store's documents, written only by writers.

Where it lives: the committed manifest names it, ``extras["bm25"] = {"dir": "bm25.v<N>-<8 hex>",
"content_version": C}``: a folder ``INDEX/bm25.v<N>-<8 hex>`` built at version ``N`` from the doc store
whose :func:`indexing.updates.content_version` was ``C``. While ``C`` equals the manifest's content version,
the folder is current up to deletions, which searches drop by checking the doc store; once documents were
added or replaced without rebuilding it, it is stale. Indexes written by earlier releases keep BM25 in
``INDEX/bm25/`` (its ``bm25.json`` records ``extra.content_version``): it is read while the manifest names
no BM25 folder and its content version matches.

Writers (under the index's writer lock, in the same commit as the dense change): ``retriever index bm25``
and ``index build --bm25`` (:func:`build_bm25`), ``index add``/``delete`` (:func:`bm25_for_update`, a
:data:`indexing.updates.BeforeCommit` callback). The commit removes ``bm25.v*`` folders the new manifest
does not name.

Readers (:func:`open_bm25`) never write: a missing or stale BM25 index is a :class:`Bm25NotReadyError`
naming ``retriever index bm25 INDEX``. Nothing here starts Java until a BM25 index is opened.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from indexing.docstore import DocStore
from indexing.errors import IndexDirError, RetrieverError
from indexing.index_dir import new_tag
from indexing.manifest import Manifest, read_manifest
from indexing.updates import BeforeCommit, content_version, update_extras
from retriever.search.bm25 import LuceneBM25, read_bm25_json, write_index
from retriever.search.java import find_java_home

logger = logging.getLogger(__name__)

EXTRA = "bm25"
"""The manifest ``extras`` key naming the BM25 folder: ``{"dir": str, "content_version": int}``."""
LEGACY_DIR = "bm25"
"""Where earlier releases kept BM25 (``INDEX/bm25/``), read when the manifest names no BM25 folder."""
FOLDER_PREFIX = "bm25.v"

Bm25State = Literal["current", "stale", "missing"]


class Bm25NotReadyError(RetrieverError):
    """The index has no current BM25 index (missing, or stale after an add); the message names the command
    that builds it (``retriever index bm25 INDEX``). ``state`` is ``"missing"`` or ``"stale"``."""

    def __init__(self, message: str, state: Bm25State):
        super().__init__(message)
        self.state = state

    def __reduce__(self) -> tuple:  # picklable (a set's shard raises it in a Ray worker), state included
        return type(self), (str(self), self.state)


def command_for(index_path: Path) -> str:
    """The command that (re)builds the BM25 index of ``index_path``, as the user would type it."""
    return f"retriever index bm25 {index_path}"


def bm25_dir(index_path: Path, manifest: Manifest) -> Path | None:
    """The BM25 folder ``manifest`` names (``extras["bm25"]["dir"]``), else the legacy ``INDEX/bm25`` when it
    holds a ``bm25.json``, else None. Reads no Lucene file.

    Raises:
        IndexDirError: the manifest names something that is not a BM25 folder name (a path, ``..``).
    """
    record = manifest.extras.get(EXTRA)
    if isinstance(record, dict) and record.get("dir"):
        name = str(record["dir"])
        if not name.startswith(FOLDER_PREFIX) or Path(name).name != name or name in (".", ".."):
            raise IndexDirError(f"{index_path}: the manifest names {name!r} as its BM25 folder (not a bm25.v* name)")
        return Path(index_path) / name
    legacy = Path(index_path) / LEGACY_DIR
    return legacy if read_bm25_json(legacy) is not None else None


def bm25_state(index_path: Path, manifest: Manifest) -> Bm25State:
    """Whether the index's BM25 is current for ``manifest`` (reads the manifest and ``bm25.json`` only; no JVM).

    ``"current"``: built at the manifest's content version (deletions since are fine);
    ``"stale"``: built before documents were added or replaced; ``"missing"``: none, or its folder is gone.
    """
    folder = bm25_dir(index_path, manifest)
    if folder is None:
        return "missing"
    record = manifest.extras.get(EXTRA)
    if isinstance(record, dict) and record.get("dir"):
        built_at = record.get("content_version")
        if not (folder / "bm25.json").is_file():
            return "missing"
    else:
        built_at = ((read_bm25_json(folder) or {}).get("extra") or {}).get("content_version")
    return "current" if built_at == content_version(manifest) else "stale"


def check_bm25(index_path: Path, manifest: Manifest) -> Path:
    """The folder of the index's current BM25 index (no JVM).

    Raises:
        Bm25NotReadyError: missing or stale; the one-line message names ``retriever index bm25 INDEX``.
        IndexDirError: the manifest names an invalid folder.
    """
    state = bm25_state(index_path, manifest)
    if state == "missing":
        raise Bm25NotReadyError(
            f"{index_path} has no BM25 index (needed for bm25 and hybrid search); build it with "
            f"`{command_for(index_path)}` (or `retriever index build --bm25`)", state)
    if state == "stale":
        raise Bm25NotReadyError(
            f"the BM25 index of {index_path} is out of date (documents were added or changed without updating it); "
            f"rebuild it with `{command_for(index_path)}`", state)
    folder = bm25_dir(index_path, manifest)
    assert folder is not None
    return folder


def open_bm25(index_path: Path, manifest: Manifest) -> LuceneBM25:
    """Open the BM25 index of ``manifest``'s version of the index at ``index_path``, read-only (starts the
    Lucene child process, and its JVM, when this process has none).

    Raises:
        Bm25NotReadyError: missing or stale (see :func:`check_bm25`). IndexDirError: an incomplete or
            unreadable Lucene index. RetrieverError: no Java 21+ or pyserini.
    """
    return LuceneBM25.load(check_bm25(index_path, manifest))


def has_bm25(index_path: Path, manifest: Manifest) -> bool:
    """Whether the index has a BM25 index to keep up to date (current or stale; named or legacy)."""
    return bm25_dir(index_path, manifest) is not None


def _contents(docstore: DocStore) -> Iterator[tuple[str, str]]:
    """``(doc_id, title + " " + text)`` of every stored document (BEIR's flat setting)."""
    for doc in docstore.iter_documents():
        yield doc.id, f"{doc.title} {doc.text}" if doc.title else doc.text


def bm25_before_commit(*, threads: int = 2, rebuild: bool = True) -> BeforeCommit:
    """A :data:`indexing.updates.BeforeCommit` that builds BM25 into the version being committed.

    The callback reads the draft's doc store and writes ``INDEX/bm25.v<N>-<8 hex>`` (``N`` the draft's version),
    returning ``{"bm25": {"dir": ..., "content_version": ...}}`` for the manifest. Without ``rebuild`` it
    builds only when needed: an index without BM25 stays without, and a BM25 index still current for the
    draft (a delete, an upsert that changed nothing) is carried forward as is (it returns ``{}``).
    On failure the folder it made is removed and the error propagates (nothing is committed).

    Args:
        threads: Lucene indexing threads.
        rebuild: always build (``retriever index bm25``), or only when the draft's BM25 is stale.
    """

    def before_commit(index_path: Path, draft: Manifest, docstore_path: Path) -> dict[str, Any]:
        if not rebuild and (not has_bm25(index_path, draft) or bm25_state(index_path, draft) == "current"):
            return {}
        return _build_folder(Path(index_path), draft, docstore_path, threads)

    return before_commit


def _build_folder(index_path: Path, draft: Manifest, docstore_path: Path, threads: int) -> dict[str, Any]:
    """Write the BM25 index of the doc store at ``docstore_path`` into a new versioned folder; its extras."""
    name = f"bm25.{new_tag(draft.version)}"
    built_at = content_version(draft)
    started = time.perf_counter()
    store = DocStore(docstore_path, readonly=True)
    try:
        info = write_index(_contents(store), index_path / name, threads=threads,
                           extra={"content_version": built_at, "manifest_version": draft.version})
    except BaseException:
        shutil.rmtree(index_path / name, ignore_errors=True)
        raise
    finally:
        store.close()
    logger.info("BM25 index of %d documents built in %s (%.1fs)", info["documents"], name, time.perf_counter() - started)
    return {EXTRA: {"dir": name, "content_version": built_at}}


def bm25_for_update(index_path: Path) -> BeforeCommit | None:
    """What ``index add``/``delete`` pass as ``before_commit``: a callback keeping the index's BM25 current in
    the same commit when the index has BM25, else None. Checks now that Java is there when it will be needed.

    Raises:
        IndexDirError: no index at ``index_path``.
        RetrieverError: the index has BM25 and no Java 21+ is found (the update would fail at its commit).
    """
    manifest = read_manifest(Path(index_path))
    if not has_bm25(index_path, manifest):
        return None
    try:
        find_java_home(os.environ)
    except RetrieverError as exc:
        raise RetrieverError(f"{index_path} has a BM25 index, which this update keeps current: {exc}") from None
    return bm25_before_commit(rebuild=False)


def build_bm25(index_path: Path, *, threads: int = 2, wait: float = 0.0, command: str = "retriever index bm25") -> Manifest:
    """(Re)build the BM25 index of the committed index at ``index_path`` and commit its folder in a new version
    (``retriever index bm25``), holding the writer lock. Returns the committed manifest.

    Raises:
        IndexDirError: no index there. IndexLockedError: another writer (after ``wait`` seconds).
        RetrieverError: no Java/pyserini, an empty doc store, or Lucene failed (nothing is committed).
    """
    return update_extras(Path(index_path), bm25_before_commit(threads=threads), command=command, wait=wait)


def ensure_bm25_built(index_path: Path, *, threads: int = 2, wait: float = 0.0) -> Manifest:
    """Writer side, for scripts that own the index (benchmarks): :func:`build_bm25` unless the committed BM25
    index is already current. Holds the writer lock while it checks. Returns the committed manifest.

    Raises:
        as :func:`build_bm25`.
    """
    from indexing.lock import writer_lock

    with writer_lock(Path(index_path), "retriever index bm25", wait=wait):
        manifest = read_manifest(Path(index_path))
        if bm25_state(index_path, manifest) == "current":
            return manifest
        return build_bm25(index_path, threads=threads, wait=wait)
