"""Updates of a committed index: add (with upsert), delete, compact. Copy-on-write and atomic.

Each update holds the index's writer lock (:mod:`indexing.lock`) from reading the manifest to committing,
writes the next version's index and doc store beside the current ones under names only it produces
(:func:`indexing.index_dir.new_tag`) and commits by rewriting the manifest; any failure before that removes
its own files and leaves the index exactly as it was.

Files derived from the documents (the BM25 index, built by ``retriever.search.bm25_index``, which this layer must not
import) join the same commit through a :data:`BeforeCommit` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


from indexing.builder import DocumentEncoder, _batched, _raise_duplicate, passage_inputs
from indexing.chunking import chunk_documents
from indexing.docstore import DocStore
from indexing.documents import Document
from indexing.errors import IndexDirError, ModelError
from indexing.faiss_index import Metric, VectorIndex
from indexing.layout import is_on_disk, is_sharded
from indexing.index_dir import commit, copy_docstore, docstore_file, file_facts, index_file, new_tag, remove_tagged
from indexing.faults import fault_point
from indexing.lock import writer_lock
from indexing.manifest import Manifest, read_manifest, verify_files

log = logging.getLogger(__name__)

BeforeCommit = Callable[[Path, Manifest, Path], dict[str, Any]]
"""Called under the writer lock with (index folder, the next manifest as drafted, its doc store file).

The draft's files are written and checksummed but not committed; ``draft.version`` is the version being
committed and ``draft.extras["content_version"]`` is set. The doc store file is closed. It returns changes
merged into the committed manifest's ``extras``; if it raises, nothing is committed (it removes what it made).
"""

CommitWith = Callable[[Path, Manifest], None]
"""Makes a drafted version current: :func:`indexing.index_dir.commit` by default. An index set passes one that
only records the draft (its files stay, ``manifest.json`` is untouched) and commits the set later
(:mod:`indexing.index_set`); only such a writer may update a shard of a set (``extras["index_set"]``)."""


@dataclass(frozen=True)
class UpdateReport:
    """What an update did. ``version`` is the committed manifest version afterwards."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    deleted: int = 0
    missing: tuple[str, ...] = ()
    version: int = 0


def content_version(manifest: Manifest) -> int:
    """The manifest version at which documents were last added or replaced (deletions do not move it).

    A build starts it at its own version (a manifest without ``extras["content_version"]`` counts as
    changed at its version). Indexes derived from the documents (BM25) stay valid while it is unchanged,
    as long as they drop documents the doc store no longer holds.
    """
    return int(manifest.extras.get("content_version", manifest.version))


class _Transaction:
    """Next-version files of an index; ``commit`` makes them current, ``abort`` removes them.

    Create it only while holding the index's writer lock (see :func:`_transaction`).
    """

    def __init__(self, path: Path, before_commit: BeforeCommit | None = None, commit_with: CommitWith | None = None):
        self.path = path
        self.before_commit = before_commit
        self.commit_with = commit_with or commit
        self.manifest = read_manifest(path)
        if commit_with is None:
            refuse_set_shard(path, self.manifest)
        if is_sharded(self.manifest) or is_on_disk(self.manifest):
            kind = "sharded" if is_sharded(self.manifest) else "on-disk IVF"
            raise IndexDirError(f"{path}: a {kind} index cannot be updated in place; rebuild it (or merge) with the new documents")
        verify_files(path, self.manifest, checksums=False)
        self.version = self.manifest.version + 1
        self.tag = new_tag(self.version)
        self.vectors = VectorIndex.load(
            path / self.manifest.files["index"], self.manifest.factory, Metric(self.manifest.metric)
        )
        self.store: DocStore = copy_docstore(path, self.manifest.files["docstore"], docstore_file(self.tag))

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents from the store and their vectors from the index (or tombstone them)."""
        pids = self.store.delete(list(doc_ids), tombstone=not self.vectors.supports_remove)
        if len(pids) and self.vectors.supports_remove:
            self.vectors.remove(pids)
        return len(pids)

    def commit(self, *, content_changed: bool = False) -> Manifest:
        """Make this version current. ``content_changed``: documents were added or replaced (not only
        deleted), which moves ``extras["content_version"]`` to this version (see :func:`content_version`)."""
        names = {"index": index_file(self.tag), "docstore": docstore_file(self.tag)}
        self.vectors.save(self.path / names["index"])
        fault_point("after-index-write")
        counts = {
            "documents": self.store.count_documents(),
            "passages": self.store.count_passages(),
            "tombstones": len(self.store.tombstones()),
        }
        chunking = {**self.manifest.chunking, "max_passages_per_document": self.store.max_passages_per_document()}
        self.store.close()
        checksums, sizes = file_facts(self.path, list(names.values()))
        kept = {role: name for role, name in self.manifest.files.items() if role not in names}  # e.g. the query encoder
        names = {**kept, **names}
        checksums.update({n: self.manifest.checksums[n] for n in kept.values()})
        sizes.update({n: self.manifest.sizes[n] for n in kept.values()})
        extras = {**self.manifest.extras,
                  "content_version": self.version if content_changed else content_version(self.manifest)}
        manifest = self.manifest.next(
            files=names, checksums=checksums, sizes=sizes, counts=counts, chunking=chunking, extras=extras
        )
        if self.before_commit is not None:
            manifest = replace(manifest, extras={
                **manifest.extras, **self.before_commit(self.path, manifest, self.path / names["docstore"])})
        self.commit_with(self.path, manifest)
        return manifest

    def abort(self) -> None:
        """Close and remove this transaction's own files (never a file another version names)."""
        self.store.close()
        remove_tagged(self.path, self.tag)


@contextmanager
def _transaction(path: Path, command: str, wait: float, before_commit: BeforeCommit | None = None,
                 commit_with: CommitWith | None = None) -> Iterator[_Transaction]:
    """Hold the writer lock and open a transaction; abort it when the block raises (or is killed by a signal)."""
    with writer_lock(path, command, wait=wait):
        txn = _Transaction(path, before_commit, commit_with)
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise


def refuse_set_shard(path: Path, manifest: Manifest) -> None:
    """Raise IndexDirError when ``manifest`` is a shard of an index set (``extras["index_set"]``): its set's
    ``set.json`` names its versions, so only the set's writers (which pass ``commit_with``) may change it."""
    member = manifest.extras.get("index_set")
    if isinstance(member, dict):
        root = Path(path).resolve().parent
        raise IndexDirError(f"{path} is shard {member.get('shard')} of the index set {root}; update the set instead "
                            f"(`retriever set add|delete|compact {root}`)")


def add_documents(
    path: Path,
    documents: Iterable[Document],
    encoder: DocumentEncoder,
    *,
    upsert: bool = False,
    batch_size: int = 64,
    docs_per_batch: int = 4096,
    wait: float = 0.0,
    before_commit: BeforeCommit | None = None,
    commit_with: CommitWith | None = None,
) -> UpdateReport:
    """Encode and add documents to the index at ``path``, holding its writer lock.

    With ``upsert``, documents whose id exists are replaced when their title, text or metadata changed and
    skipped when identical (not re-encoded). Without it an existing id is an error.

    Args:
        wait: seconds to wait for another writer (see :func:`indexing.lock.writer_lock`).
        before_commit: joins derived files (BM25) to the commit, see :data:`BeforeCommit`.
        commit_with: how the drafted version is made current (see :data:`CommitWith`).

    Raises:
        IndexLockedError: another process writes the index.
        IndexDirError: the index is a shard of a set and ``commit_with`` is not given.
        ModelError: the encoder's dimension differs from the index's.
        CorpusError: bad input or (without ``upsert``) an id already in the index; the index is unchanged.
    """
    with _transaction(path, "index add --upsert" if upsert else "index add", wait, before_commit, commit_with) as txn:
        if encoder.dim != txn.manifest.dim:
            raise ModelError(f"the model gives {encoder.dim}-d vectors, the index at {path} holds {txn.manifest.dim}-d")
        added = replaced = unchanged = 0
        chunking = txn.manifest.chunking
        for batch in _batched(iter(documents), docs_per_batch):
            _check_unique(batch)
            stored = txn.store.documents([d.id for d in batch])
            if stored and not upsert:
                _raise_duplicate(next(d for d in batch if d.id in stored))
            fresh = [d for d in batch if d.id not in stored or not _same(stored[d.id], d)]
            unchanged += len(batch) - len(fresh)
            changed = [d.id for d in fresh if d.id in stored]
            replaced += len(changed)
            if changed:
                txn.delete(changed)
            if not fresh:
                continue
            windows = chunk_documents(fresh, encoder.tokenizer, chunk_tokens=chunking["chunk_tokens"], overlap=chunking["overlap"])
            texts = [t for doc, ps in zip(fresh, windows) for t in passage_inputs(doc, ps)]
            vectors = encoder.encode_documents(texts, batch_size=batch_size)
            pids = txn.store.add(fresh, windows)
            txn.vectors.add(pids, vectors)
            added += len(fresh) - len(changed)
        manifest = txn.commit(content_changed=added + replaced > 0)
    return UpdateReport(added=added, replaced=replaced, unchanged=unchanged, version=manifest.version)


def _check_unique(batch: list[Document]) -> None:
    seen: set[str] = set()
    for doc in batch:
        if doc.id in seen:
            _raise_duplicate(doc)
        seen.add(doc.id)


def _same(a: Document, b: Document) -> bool:
    return (a.title, a.text, a.metadata) == (b.title, b.text, b.metadata)


def delete_documents(
    path: Path, doc_ids: Sequence[str], *, wait: float = 0.0, before_commit: BeforeCommit | None = None,
    commit_with: CommitWith | None = None,
) -> UpdateReport:
    """Delete documents by id, holding the writer lock; unknown ids are reported in ``missing``, not an error.
    Nothing present: nothing is committed (``commit_with`` is not called).

    Raises:
        IndexLockedError: another process writes the index (after ``wait`` seconds).
        IndexDirError: the index is a shard of a set and ``commit_with`` is not given.
    """
    with _transaction(path, "index delete", wait, before_commit, commit_with) as txn:
        present = txn.store.existing(list(doc_ids))
        missing = tuple(d for d in dict.fromkeys(doc_ids) if d not in present)
        if not present:
            txn.abort()
            return UpdateReport(missing=missing, version=txn.manifest.version)
        txn.delete(sorted(present))
        manifest = txn.commit()
    return UpdateReport(deleted=len(present), missing=missing, version=manifest.version)


def compact(path: Path, *, wait: float = 0.0, commit_with: CommitWith | None = None) -> UpdateReport:
    """Rebuild the vectors of an index that keeps deleted vectors (HNSW) without them, holding the writer lock.
    Nothing to drop: nothing is committed (``commit_with`` is not called).

    Raises:
        IndexLockedError: another process writes the index (after ``wait`` seconds).
        IndexDirError: the index type cannot reconstruct its vectors, or a set's shard without ``commit_with``.
    """
    with _transaction(path, "index compact", wait, commit_with=commit_with) as txn:
        dead = txn.store.tombstones()
        if not len(dead):
            txn.abort()
            return UpdateReport(version=txn.manifest.version)
        fresh = VectorIndex.create(txn.manifest.dim, txn.manifest.factory, Metric(txn.manifest.metric))
        if not fresh.is_trained:
            raise IndexDirError(f"{path}: compacting {txn.manifest.factory} is not supported (needs retraining)")
        for pids in txn.store.iter_pid_batches():
            fresh.add(pids, txn.vectors.reconstruct(pids))
        txn.vectors = fresh
        txn.store.clear_tombstones()
        manifest = txn.commit()
    return UpdateReport(deleted=len(dead), version=manifest.version)


AttachFiles = Callable[[Path, Manifest, str], dict[str, str]]
"""Writes files into the index folder for the drafted next version: called with (index folder, draft manifest,
the writer's tag for file names, see :func:`indexing.index_dir.new_tag`); returns ``role -> file name``."""


def attach_files(path: Path, write: AttachFiles, *, command: str, wait: float = 0.0) -> Manifest:
    """Commit the next version with files written by ``write`` added to (or replacing roles of) the current ones,
    checksummed, under the writer lock. Files it wrote are removed if anything fails.

    Raises:
        IndexLockedError: another process writes the index (after ``wait`` seconds).
        IndexDirError: no index at ``path``; whatever ``write`` raises.
    """
    with writer_lock(path, command, wait=wait):
        current = read_manifest(path)
        verify_files(path, current, checksums=False)
        draft = current.next()
        tag = new_tag(draft.version)
        try:
            written = write(path, draft, tag)
            checksums, sizes = file_facts(path, list(written.values()))
            files = {**current.files, **written}
            named = set(files.values())  # a replaced role's old file leaves the manifest (and the folder)
            draft = replace(draft, files=files,
                            checksums={n: c for n, c in {**current.checksums, **checksums}.items() if n in named},
                            sizes={n: b for n, b in {**current.sizes, **sizes}.items() if n in named})
            commit(path, draft)
        except BaseException:
            remove_tagged(path, tag)
            raise
    return draft


def update_extras(path: Path, before_commit: BeforeCommit, *, command: str, wait: float = 0.0,
                  commit_with: CommitWith | None = None) -> Manifest:
    """Commit the next version with the same files and ``extras`` changed by ``before_commit`` (e.g. a new BM25
    index), holding the writer lock.

    Raises:
        IndexLockedError: another process writes the index (after ``wait`` seconds).
        IndexDirError: no index at ``path``, or a set's shard without ``commit_with``.
    """
    with writer_lock(path, command, wait=wait):
        current = read_manifest(path)
        if commit_with is None:
            refuse_set_shard(path, current)
        verify_files(path, current, checksums=False)
        draft = current.next(extras={**current.extras, "content_version": content_version(current)})
        draft = replace(draft, extras={**draft.extras, **before_commit(path, draft, path / current.files["docstore"])})
        (commit_with or commit)(path, draft)
    return draft
