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
from indexing.layout import load_vectors
from indexing.manifest import Manifest, read_manifest, sha256_file, verify_files, write_manifest

log = logging.getLogger(__name__)

CHECKSUM_LIMIT = 1 << 30
"""Files up to this size are checksummed on every load; larger ones only by ``retriever index verify``."""


OPEN_ATTEMPTS = 5
"""Times a reader reads the manifest again when a file it names vanished under it (a commit in between)."""

VERSIONED_PREFIXES = ("index.v", "docstore.v", "bm25.v")
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

    def close(self) -> None:
        self.docstore.close()


def open_index(path: Path, *, mmap: bool | None = None, verify: bool | None = None) -> OpenIndex:
    """Load the committed version of the index at ``path`` (single-file, sharded or with on-disk lists).

    Args:
        mmap: map IVF inverted lists from disk instead of reading them (None: for IVF indexes, yes).
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
        if mmap is None:
            mmap = manifest.factory.startswith("IVF")
        vectors = load_vectors(path, manifest, mmap=mmap)
    except BaseException:
        docstore.close()
        raise
    return OpenIndex(path, manifest, vectors, docstore)


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
