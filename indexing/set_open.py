"""Reading an index set: the shard versions ``set.json`` names, opened together as one version of the set.

A reader never takes a lock and never writes. A commit may remove the files of the set version a reader is
opening (after it read ``set.json``); the reader then reads ``set.json`` again and opens that version instead,
up to :data:`indexing.index_dir.OPEN_ATTEMPTS` times. Files once opened stay readable when a commit unlinks
them, so what is returned is one whole set version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from indexing.errors import IndexDirError
from indexing.index_dir import OPEN_ATTEMPTS, OpenIndex
from indexing.index_dir import _open_version as open_version  # one shard at the version set.json names
from indexing.manifest import Manifest, verify_files
from indexing.set_manifest import SetManifest, read_set_manifest

log = logging.getLogger(__name__)


@dataclass
class OpenSet:
    """A loaded set version: its set manifest and one :class:`OpenIndex` per shard (in shard order)."""

    path: Path
    manifest: SetManifest
    shards: list[OpenIndex]

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


def open_set(root: str | Path, *, mmap: bool | None = None, verify: bool | None = None) -> OpenSet:
    """Open every shard of the committed set version at ``root``.

    Args:
        mmap, verify: per shard, see :func:`indexing.index_dir.open_index`.

    Raises:
        IndexDirError: no set, an invalid ``set.json``, or a missing/corrupted shard file (after retries when
            a commit replaced the version being opened).
    """
    root = Path(root)
    manifest = read_set_manifest(root)
    for attempt in range(OPEN_ATTEMPTS):
        opened: list[OpenIndex] = []
        try:
            for number in range(manifest.num_shards):
                shard = manifest.shard_path(root, number)
                opened.append(open_version(shard, manifest.shard_manifest(number), mmap=mmap, verify=verify))
            return OpenSet(root, manifest, opened)
        except IndexDirError:
            for shard_open in opened:
                shard_open.close()
            latest = read_set_manifest(root)
            if latest.version == manifest.version or attempt == OPEN_ATTEMPTS - 1:
                raise
            log.debug("%s: set version %d was replaced by %d while opening; retrying", root, manifest.version, latest.version)
            manifest = latest
    raise AssertionError("unreachable")


def summary(manifest: SetManifest) -> Manifest:
    """One :class:`Manifest` describing the whole set, for code written for one index (``info``, the service):
    shard 0's model, dim, metric, factory and chunking; the set's version; counts summed over shards;
    ``extras["index_set"] = {"shards": N, "versions": [...]}``; no files (they live in the shard folders)."""
    shards = [manifest.shard_manifest(n) for n in range(manifest.num_shards)]
    first = shards[0]
    counts = {key: sum(int(s.counts.get(key, 0)) for s in shards) for key in ("documents", "passages", "tombstones")}
    chunking = {**first.chunking,
                "max_passages_per_document": max(int(s.chunking.get("max_passages_per_document", 1)) for s in shards)}
    extras = {**first.extras, "index_set": {"shards": manifest.num_shards, "versions": [s.version for s in shards]}}
    extras.pop("bm25", None)
    return replace(first, version=manifest.version, files={}, checksums={}, sizes={}, counts=counts, chunking=chunking,
                   extras=extras, created=manifest.created, updated=manifest.updated)


def verify_set(root: str | Path) -> int:
    """Check every file of every shard of the committed set version against its checksum; the number of files.

    Raises:
        IndexDirError: no set, an invalid ``set.json``, or a missing, truncated or corrupted file (named).
    """
    root = Path(root)
    manifest = read_set_manifest(root)
    files = 0
    for number in range(manifest.num_shards):
        shard_manifest = manifest.shard_manifest(number)
        verify_files(manifest.shard_path(root, number), shard_manifest, checksums=True)
        files += len(shard_manifest.checksums)
    return files
