"""The on-disk index directory: versioned files, committed by rewriting ``manifest.json``.

Layout::

    INDEX/
      manifest.json           the commit point (see indexing.manifest)
      index.v<N>.faiss        the FAISS index of version N (or index.v<N>.s<i>.faiss per shard, and
                              index.v<N>[.s<i>].ivfdata for on-disk IVF lists: see indexing.layout)
      docstore.v<N>.sqlite    ids, text, metadata, passages of version N
      bm25/                   optional Lucene index (retriever.bm25)
      .build/                 an unfinished build (removed when the build commits)

A change writes new versioned files, then the manifest; a killed process leaves the last
committed version loadable. Files no manifest names are removed at the next commit.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from indexing.docstore import DocStore
from indexing.errors import IndexDirError
from indexing.faiss_index import VectorIndex
from indexing.layout import load_vectors
from indexing.manifest import Manifest, read_manifest, sha256_file, verify_files, write_manifest

log = logging.getLogger(__name__)

CHECKSUM_LIMIT = 1 << 30
"""Files up to this size are checksummed on every load; larger ones only by ``retriever index verify``."""


def index_file(version: int) -> str:
    return f"index.v{version}.faiss"


def docstore_file(version: int) -> str:
    return f"docstore.v{version}.sqlite"


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
    """
    manifest = read_manifest(path)
    if verify is None:
        verify = all(size <= CHECKSUM_LIMIT for size in manifest.sizes.values())
    verify_files(path, manifest, checksums=verify)
    if mmap is None:
        mmap = manifest.factory.startswith("IVF")
    vectors = load_vectors(path, manifest, mmap=mmap)
    docstore = DocStore(path / manifest.files["docstore"], readonly=True)
    return OpenIndex(path, manifest, vectors, docstore)


def file_facts(path: Path, names: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Checksums and sizes of files in ``path``."""
    return {n: sha256_file(path / n) for n in names}, {n: (path / n).stat().st_size for n in names}


def commit(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` as the committed version, then remove files no longer referenced.

    ``manifest.checksums``/``sizes`` must already describe the files named in ``manifest.files``.
    """
    write_manifest(path, manifest)
    keep = set(manifest.files.values()) | {"manifest.json", "bm25", ".build"}
    for entry in path.iterdir():
        if entry.name in keep or entry.name.startswith("."):
            continue
        if entry.name.startswith(("index.v", "docstore.v")):
            log.debug("removing superseded %s", entry)
            entry.unlink(missing_ok=True)


def copy_docstore(path: Path, source: str, target: str) -> DocStore:
    """Copy a doc store file for a copy-on-write update and open the copy read-write."""
    tmp = path / (target + ".tmp")
    shutil.copyfile(path / source, tmp)
    os.replace(tmp, path / target)
    return DocStore(path / target, readonly=False)
