"""Atomic updates of an index set (see :mod:`indexing.set_manifest` for the layout): add, delete, compact, extras.

A set update holds the set's writer lock for its whole run (and each shard's lock while it writes that shard:
the order is always set, then shards). It writes the next version of each shard it changes with the ordinary
copy-on-write transaction of :mod:`indexing.updates`, but the shard's commit only *records* the drafted
manifest (``commit_with``): the shard's ``manifest.json`` and the files of its current version stay. Then:

1. ``set.json`` is replaced atomically, naming the new shard versions: the commit point of the whole update;
2. each changed shard's ``manifest.json`` is rewritten to match, and files no manifest names are removed.

A writer killed before (1) leaves the set at the old version (its drafted files are unnamed leftovers, removed
by the next commit of that shard); killed after (1), at the new one: the next set writer first rolls every
shard's ``manifest.json`` forward to what ``set.json`` names (:func:`recover`). Readers read ``set.json`` only.

Fault points (tests, :mod:`indexing.faults`): ``before-set-commit`` (every shard drafted), ``before-set-rename``,
``after-set-rename`` (committed, no shard manifest rewritten yet), ``after-first-shard-commit``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from indexing.builder import DocumentEncoder
from indexing.documents import Document
from indexing.errors import IndexDirError
from indexing.faults import fault_point
from indexing.index_dir import commit
from indexing.lock import writer_lock
from indexing.manifest import Manifest, now, read_manifest
from indexing.set_manifest import SetManifest, read_set_manifest, shard_of, shard_record, write_set_manifest
from indexing.updates import BeforeCommit, UpdateReport, add_documents, compact, delete_documents, update_extras

log = logging.getLogger(__name__)

ShardHook = Callable[[Path], "BeforeCommit | None"]
"""Given a shard folder, the :data:`indexing.updates.BeforeCommit` for its update (e.g. keeping BM25 current)."""


@dataclass(frozen=True)
class SetReport:
    """What a set update did, summed over shards. ``version`` is the set version afterwards; ``shards`` the
    shards that changed."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    deleted: int = 0
    missing: tuple[str, ...] = ()
    version: int = 0
    shards: tuple[int, ...] = ()


class SetWrite:
    """One set update in progress: the set manifest it started from and the shard versions drafted so far."""

    def __init__(self, root: Path, current: SetManifest):
        self.root = root
        self.current = current
        self.drafts: dict[int, Manifest] = {}

    def shard(self, number: int) -> Path:
        return self.current.shard_path(self.root, number)

    def capture(self, number: int) -> Callable[[Path, Manifest], None]:
        """A ``commit_with`` for shard ``number``: records its drafted manifest instead of committing it."""
        return lambda _path, manifest: self.drafts.__setitem__(number, manifest)

    def commit(self) -> SetManifest:
        """Commit the drafted shard versions as the next set version (nothing drafted: the current one)."""
        if not self.drafts:
            return self.current
        shards = list(self.current.shards)
        for number, draft in self.drafts.items():
            shards[number] = shard_record(number, draft)
        fresh = replace(self.current, version=self.current.version + 1, shards=shards, updated=now())
        fault_point("before-set-commit")
        write_set_manifest(self.root, fresh)
        drafts, self.drafts = self.drafts, {}  # committed: never discarded from here on
        fault_point("after-set-rename")
        for count, (number, draft) in enumerate(sorted(drafts.items())):
            _commit_shard(self.shard(number), draft)
            if count == 0:
                fault_point("after-first-shard-commit")
        self.current = fresh
        return fresh

    def discard(self) -> None:
        """Remove the files drafted by this update that the current set version does not name."""
        for number, draft in self.drafts.items():
            keep = _named(self.current.shard_manifest(number))
            for name in _named(draft) - keep:
                _remove(self.shard(number) / name)
        self.drafts = {}


@contextmanager
def set_writer(root: Path, command: str, *, wait: float = 0.0) -> Iterator[SetWrite]:
    """Hold the set's writer lock, roll shards forward (:func:`recover`) and yield a :class:`SetWrite`; its
    uncommitted drafts are removed when the block raises.

    Raises:
        IndexLockedError: another process writes the set (after ``wait`` seconds).
        IndexDirError: no set at ``root`` or an invalid ``set.json``.
    """
    root = Path(root)
    with writer_lock(root, command, wait=wait):
        write = SetWrite(root, read_set_manifest(root))
        recover(root, write.current)
        try:
            yield write
        except BaseException:
            write.discard()
            raise


def recover(root: Path, current: SetManifest) -> list[int]:
    """Rewrite each shard's ``manifest.json`` that differs from what ``set.json`` names (a writer was killed
    between the set commit and the shard commits); returns the shards rewritten. Call under the set's lock."""
    fixed = []
    for number in range(current.num_shards):
        recorded = current.shard_manifest(number)
        try:
            on_disk = read_manifest(current.shard_path(root, number))
            same = (on_disk.version, on_disk.files) == (recorded.version, recorded.files)
        except IndexDirError:
            same = False
        if not same:
            log.info("%s: shard %d rolled forward to version %d", root, number, recorded.version)
            _commit_shard(current.shard_path(root, number), recorded)
            fixed.append(number)
    return fixed


def _commit_shard(shard: Path, manifest: Manifest) -> None:
    with writer_lock(shard, "set commit"):
        commit(shard, manifest)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _named(manifest: Manifest) -> set[str]:
    """File and folder names a shard version uses (its files and its BM25 folder)."""
    names = set(manifest.files.values())
    bm25 = manifest.extras.get("bm25")
    if isinstance(bm25, dict) and bm25.get("dir"):
        names.add(str(bm25["dir"]))
    return names


def route_counts(documents: Iterable[Document], num_shards: int) -> dict[int, int]:
    """Documents per shard of ``documents`` (reads them all; raises what reading raises)."""
    counts: dict[int, int] = {}
    for doc in documents:
        number = shard_of(doc.id, num_shards)
        counts[number] = counts.get(number, 0) + 1
    return counts


def add_to_set(
    root: Path,
    documents: Callable[[], Iterable[Document]],
    encoder: DocumentEncoder,
    *,
    upsert: bool = False,
    batch_size: int = 64,
    wait: float = 0.0,
    hook: ShardHook | None = None,
) -> SetReport:
    """Encode and add documents to the set at ``root``, each to the shard its id hashes to, in one set commit.

    Args:
        documents: returns a fresh iterator over the documents; called once to route them, then once per
            shard that receives any (memory stays flat in their number).
        upsert, batch_size: as :func:`indexing.updates.add_documents`.
        hook: per shard, the ``before_commit`` of its update (BM25), or None.

    Raises:
        IndexLockedError: another writer holds the set. CorpusError: bad input or (without ``upsert``) an id
        already in the set: nothing is committed. ModelError: the encoder's dimension differs.
    """
    command = "set add --upsert" if upsert else "set add"
    with set_writer(root, command, wait=wait) as write:
        n = write.current.num_shards
        counts = route_counts(documents(), n)
        reports = []
        for number in sorted(counts):
            mine = (d for d in documents() if shard_of(d.id, n) == number)
            shard = write.shard(number)
            reports.append(add_documents(shard, mine, encoder, upsert=upsert, batch_size=batch_size, wait=wait,
                                         before_commit=hook(shard) if hook else None, commit_with=write.capture(number)))
        fresh = write.commit()
    return _sum(reports, fresh.version, write_shards(reports, sorted(counts)))


def delete_from_set(root: Path, doc_ids: Sequence[str], *, wait: float = 0.0, hook: ShardHook | None = None) -> SetReport:
    """Delete documents by id from the shards their ids hash to, in one set commit; unknown ids go to ``missing``.

    Raises:
        IndexLockedError: another writer holds the set (after ``wait`` seconds).
    """
    with set_writer(root, "set delete", wait=wait) as write:
        n = write.current.num_shards
        groups: dict[int, list[str]] = {}
        for doc_id in dict.fromkeys(doc_ids):
            groups.setdefault(shard_of(doc_id, n), []).append(doc_id)
        reports = []
        for number in sorted(groups):
            shard = write.shard(number)
            reports.append(delete_documents(shard, groups[number], wait=wait, before_commit=hook(shard) if hook else None,
                                            commit_with=write.capture(number)))
        changed = sorted(write.drafts)
        fresh = write.commit()
    gone = {m for r in reports for m in r.missing}
    report = _sum(reports, fresh.version, tuple(changed))
    return replace(report, missing=tuple(d for d in dict.fromkeys(doc_ids) if d in gone))


def compact_set(root: Path, *, wait: float = 0.0) -> SetReport:
    """Drop deleted vectors (HNSW) in every shard that keeps some, in one set commit.

    Raises:
        IndexLockedError: another writer holds the set. IndexDirError: an index type that cannot compact.
    """
    with set_writer(root, "set compact", wait=wait) as write:
        reports = [compact(write.shard(n), wait=wait, commit_with=write.capture(n)) for n in range(write.current.num_shards)]
        changed = sorted(write.drafts)
        fresh = write.commit()
    return _sum(reports, fresh.version, tuple(changed))


def update_set_extras(root: Path, before_commit: BeforeCommit, *, command: str, wait: float = 0.0) -> SetManifest:
    """Every shard's next version with ``extras`` changed by ``before_commit`` (e.g. its BM25 index), in one
    set commit. Returns the committed set manifest.

    Raises:
        IndexLockedError: another writer holds the set; whatever ``before_commit`` raises (nothing committed).
    """
    with set_writer(root, command, wait=wait) as write:
        for number in range(write.current.num_shards):
            update_extras(write.shard(number), before_commit, command=command, wait=wait, commit_with=write.capture(number))
        return write.commit()


def write_shards(reports: list[UpdateReport], numbers: list[int]) -> tuple[int, ...]:
    """The shards among ``numbers`` whose report shows a change."""
    return tuple(n for n, r in zip(numbers, reports) if r.added or r.replaced or r.deleted)


def _sum(reports: list[UpdateReport], version: int, shards: tuple[int, ...]) -> SetReport:
    return SetReport(
        added=sum(r.added for r in reports), replaced=sum(r.replaced for r in reports),
        unchanged=sum(r.unchanged for r in reports), deleted=sum(r.deleted for r in reports),
        missing=tuple(m for r in reports for m in r.missing), version=version, shards=shards,
    )
