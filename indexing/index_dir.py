"""The on-disk index directory: versioned files, committed by rewriting ``manifest.json``.

Layout::

    INDEX/
      manifest.json           the commit point (see indexing.manifest)
      .lock                   the writer lock (indexing.lock): one writer at a time
      index.v<N>-<tag>.faiss  the FAISS index of version N (or index.v<N>-<tag>.s<i>.faiss per shard, and
                              index.v<N>-<tag>[.s<i>].ivfdata for on-disk IVF lists: see indexing.layout)
      docstore.v<N>-<tag>.sqlite  ids, text, metadata, passages of version N
      bm25.v<N>-<tag>/        optional Lucene index named by the manifest (retriever.search.bm25_index)
      .build/                 an unfinished build (removed when the build commits)

``<tag>`` is random per writer, so no two writers ever produce the same file name, and an aborted writer
removes only its own files. (Indexes written before tags existed use ``index.v<N>.faiss``; they load as is.)

A change writes new versioned files, then the manifest; a killed process leaves the last committed version
loadable. Files no manifest names are removed after the next commit is durable. A reader that finds a listed
file gone (removed by a commit after it read the manifest) reads the manifest again and retries.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from indexing.docstore import DocStore
from indexing.errors import IndexDirError
from indexing.faiss_index import VectorIndex
from indexing.faults import fault_point
from indexing.layout import is_on_disk, load_vectors
from indexing.manifest import Manifest, read_manifest, sha256_file, verify_files, write_manifest

log = logging.getLogger(__name__)

CHECKSUM_LIMIT = 1 << 30
"""Files up to this size are checksummed on every load; larger ones only by ``retriever index verify``."""

MMAP_BUDGET = 0.5
"""``open_index(mmap=None)`` reads the FAISS files into memory unless they exceed this share of the available memory."""


OPEN_ATTEMPTS = 5
"""Times a reader reads the manifest again when a file it names vanished under it (a commit in between)."""

VERSIONED_PREFIXES = ("index.v", "docstore.v", "bm25.v", "query.v")
"""Names of per-version files and folders; the ones no committed manifest names are removed by :func:`commit`."""


def new_tag(version: int) -> str:
    """``"v<version>-<8 hex>"``: the stem of one writer's files of ``version``, unique to that writer."""
    return f"v{version}-{secrets.token_hex(4)}"


def index_file(tag: str) -> str:
    return f"index.{tag}.faiss"


def docstore_file(tag: str) -> str:
    return f"docstore.{tag}.sqlite"


def remove_tagged(path: Path, tag: str) -> None:
    """Remove this writer's uncommitted files and folders of ``tag`` (and nothing else)."""
    for entry in path.glob(f"*.{tag}*"):
        if entry.name.split(".", 1)[1].startswith(tag):
            _remove(entry)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


@dataclass
class OpenIndex:
    """A loaded index version: its manifest, FAISS index and (read-only) doc store."""

    path: Path
    manifest: Manifest
    vectors: VectorIndex
    docstore: DocStore
    mapped: bool = False
    """The FAISS files are memory-mapped (True also for on-disk ``*.ivfdata`` lists, which FAISS always maps)."""
    mmap_reason: str = ""
    """Why they were mapped or read, e.g. ``"reading index into memory (42 MiB)"``."""

    def close(self) -> None:
        self.docstore.close()


def open_index(path: Path, *, mmap: bool | None = None, verify: bool | None = None) -> OpenIndex:
    """Load the committed version of the index at ``path`` (single-file, sharded or with on-disk lists).

    Args:
        mmap: map the FAISS files (IVF inverted lists) from disk instead of reading them into memory. None:
            read them, unless their total size exceeds :data:`MMAP_BUDGET` of the available memory
            (``psutil.virtual_memory().available``); on-disk lists (``*.ivfdata``) are mapped whatever it says.
            The choice is on the result (``mapped``, ``mmap_reason``) and logged at INFO.
        verify: check sha256 checksums (None: for files under 1 GiB; sizes are always checked).

    Raises:
        IndexDirError: missing, incomplete or corrupted index.

    A commit may remove the files of the version this reader is opening (after it read the manifest); the
    reader then reads the new manifest and opens that version instead, up to :data:`OPEN_ATTEMPTS` times.
    Files once opened stay readable when a commit unlinks them, so what is returned is one whole version.
    """
    manifest = read_manifest(path)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return _open_version(path, manifest, mmap=mmap, verify=verify)
        except IndexDirError:
            latest = read_manifest(path)
            if latest.version == manifest.version or attempt == OPEN_ATTEMPTS - 1:
                raise
            log.debug("%s: version %d was replaced by %d while opening; retrying", path, manifest.version, latest.version)
            manifest = latest
    raise AssertionError("unreachable")


def _open_version(path: Path, manifest: Manifest, *, mmap: bool | None, verify: bool | None) -> OpenIndex:
    if verify is None:
        verify = all(size <= CHECKSUM_LIMIT for size in manifest.sizes.values())
    docstore = DocStore(path / manifest.files["docstore"], readonly=True)  # opened first: it pins the version's file
    try:
        verify_files(path, manifest, checksums=verify)
        mmap, reason = choose_mmap(manifest, mmap)
        log.info("%s: %s", path, reason)
        vectors = load_vectors(path, manifest, mmap=mmap)
    except BaseException:
        docstore.close()
        raise
    return OpenIndex(path, manifest, vectors, docstore, mapped=mmap or is_on_disk(manifest), mmap_reason=reason)


def available_memory() -> int:
    """Bytes of memory available to a new allocation without swapping (``psutil``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def choose_mmap(manifest: Manifest, mmap: bool | None) -> tuple[bool, str]:
    """``(mmap, reason)``: whether to memory-map the FAISS files of ``manifest``'s version, and why.

    ``mmap`` given: that. None: map only when the FAISS files (``index``/``shard.<i>``; not the on-disk
    ``*.ivfdata`` lists, which are mapped anyway) exceed :data:`MMAP_BUDGET` of :func:`available_memory`.
    """
    faiss_files = [manifest.files[r] for r in manifest.files if r == "index" or r.startswith("shard.")]
    size = sum(manifest.sizes.get(name, 0) for name in faiss_files)
    suffix = "; inverted lists stay on disk (.ivfdata)" if is_on_disk(manifest) else ""
    if mmap is not None:
        verb = "memory-mapping the index" if mmap else "reading index into memory"
        return mmap, f"{verb} ({_size(size)}, as asked){suffix}"
    available = available_memory()
    if size > MMAP_BUDGET * available:
        share = "half" if MMAP_BUDGET == 0.5 else f"{MMAP_BUDGET:g}"
        return True, f"memory-mapping the index ({_size(size)} > {share} of {_size(available)} available){suffix}"
    return False, f"reading index into memory ({_size(size)}){suffix}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB", "MiB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def file_facts(path: Path, names: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Checksums and sizes of files in ``path``."""
    return {n: sha256_file(path / n) for n in names}, {n: (path / n).stat().st_size for n in names}


def commit(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` as the committed version (durably), then remove versioned files it no longer names.

    ``manifest.checksums``/``sizes`` must already describe the files named in ``manifest.files``. The caller
    holds the writer lock (:func:`indexing.lock.writer_lock`), so the files removed are superseded versions
    and leftovers of killed writers, never another writer's work in progress.
    """
    write_manifest(path, manifest)
    fault_point("after-manifest-rename")
    keep = set(manifest.files.values())
    bm25_dir = (manifest.extras.get("bm25") or {}).get("dir") if isinstance(manifest.extras.get("bm25"), dict) else None
    if bm25_dir:
        keep.add(bm25_dir)
    for entry in path.iterdir():
        legacy_bm25 = entry.name == "bm25" and bm25_dir is not None  # superseded by a versioned BM25 folder
        if entry.name not in keep and (entry.name.startswith(VERSIONED_PREFIXES) or legacy_bm25):
            log.debug("removing superseded %s", entry)
            _remove(entry)


def copy_docstore(path: Path, source: str, target: str) -> DocStore:
    """Copy a doc store file for a copy-on-write update and open the copy read-write."""
    shutil.copyfile(path / source, path / target)
    return DocStore(path / target, readonly=False)
