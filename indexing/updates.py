"""Updates of a committed index: add (with upsert), delete, compact. Copy-on-write and atomic.

Each update writes the next version's index and doc store beside the current ones and commits by
rewriting the manifest; any failure before that leaves the index exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from indexing.builder import DocumentEncoder, _batched, _raise_duplicate, passage_inputs
from indexing.chunking import chunk_documents
from indexing.docstore import DocStore
from indexing.documents import Document
from indexing.errors import IndexDirError, ModelError
from indexing.faiss_index import Metric, VectorIndex
from indexing.layout import is_on_disk, is_sharded
from indexing.index_dir import commit, copy_docstore, docstore_file, file_facts, index_file
from indexing.manifest import Manifest, read_manifest, verify_files

log = logging.getLogger(__name__)


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
    """Next-version files of an index; ``commit`` makes them current, ``abort`` removes them."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = read_manifest(path)
        if is_sharded(self.manifest) or is_on_disk(self.manifest):
            kind = "sharded" if is_sharded(self.manifest) else "on-disk IVF"
            raise IndexDirError(f"{path}: a {kind} index cannot be updated in place; rebuild it (or merge) with the new documents")
        verify_files(path, self.manifest, checksums=False)
        self.version = self.manifest.version + 1
        self.vectors = VectorIndex.load(
            path / self.manifest.files["index"], self.manifest.factory, Metric(self.manifest.metric)
        )
        self.store: DocStore = copy_docstore(path, self.manifest.files["docstore"], docstore_file(self.version))

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents from the store and their vectors from the index (or tombstone them)."""
        pids = self.store.delete(list(doc_ids), tombstone=not self.vectors.supports_remove)
        if len(pids) and self.vectors.supports_remove:
            self.vectors.remove(pids)
        return len(pids)

    def commit(self, *, content_changed: bool = False) -> Manifest:
        """Make this version current. ``content_changed``: documents were added or replaced (not only
        deleted), which moves ``extras["content_version"]`` to this version (see :func:`content_version`)."""
        names = {"index": index_file(self.version), "docstore": docstore_file(self.version)}
        self.vectors.save(self.path / names["index"])
        counts = {
            "documents": self.store.count_documents(),
            "passages": self.store.count_passages(),
            "tombstones": len(self.store.tombstones()),
        }
        chunking = {**self.manifest.chunking, "max_passages_per_document": self.store.max_passages_per_document()}
        self.store.close()
        checksums, sizes = file_facts(self.path, list(names.values()))
        extras = {**self.manifest.extras,
                  "content_version": self.version if content_changed else content_version(self.manifest)}
        manifest = self.manifest.next(
            files=names, checksums=checksums, sizes=sizes, counts=counts, chunking=chunking, extras=extras
        )
        commit(self.path, manifest)
        return manifest

    def abort(self) -> None:
        self.store.close()
        for name in (index_file(self.version), docstore_file(self.version)):
            (self.path / name).unlink(missing_ok=True)


def add_documents(
    path: Path,
    documents: Iterable[Document],
    encoder: DocumentEncoder,
    *,
    upsert: bool = False,
    batch_size: int = 64,
    docs_per_batch: int = 4096,
) -> UpdateReport:
    """Encode and add documents to the index at ``path``.

    With ``upsert``, documents whose id exists are replaced when their title, text or metadata changed and
    skipped when identical (not re-encoded). Without it an existing id is an error.

    Raises:
        ModelError: the encoder's dimension differs from the index's.
        CorpusError: bad input or (without ``upsert``) an id already in the index; the index is unchanged.
    """
    txn = _Transaction(path)
    if encoder.dim != txn.manifest.dim:
        txn.abort()
        raise ModelError(f"the model gives {encoder.dim}-d vectors, the index at {path} holds {txn.manifest.dim}-d")
    added = replaced = unchanged = 0
    chunking = txn.manifest.chunking
    try:
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
    except BaseException:
        txn.abort()
        raise
    return UpdateReport(added=added, replaced=replaced, unchanged=unchanged, version=manifest.version)


def _check_unique(batch: list[Document]) -> None:
    seen: set[str] = set()
    for doc in batch:
        if doc.id in seen:
            _raise_duplicate(doc)
        seen.add(doc.id)


def _same(a: Document, b: Document) -> bool:
    return (a.title, a.text, a.metadata) == (b.title, b.text, b.metadata)


def delete_documents(path: Path, doc_ids: Sequence[str]) -> UpdateReport:
    """Delete documents by id; unknown ids are reported in ``missing``, not an error."""
    txn = _Transaction(path)
    try:
        present = txn.store.existing(list(doc_ids))
        missing = tuple(d for d in dict.fromkeys(doc_ids) if d not in present)
        if present:
            txn.delete(sorted(present))
            manifest = txn.commit()
            version = manifest.version
        else:
            txn.abort()
            version = txn.manifest.version
    except BaseException:
        txn.abort()
        raise
    return UpdateReport(deleted=len(present), missing=missing, version=version)


def compact(path: Path) -> UpdateReport:
    """Rebuild the vectors of an index that keeps deleted vectors (HNSW) without them.

    Raises:
        IndexDirError: the index type cannot reconstruct its vectors.
    """
    txn = _Transaction(path)
    try:
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
    except BaseException:
        txn.abort()
        raise
    return UpdateReport(deleted=len(dead), version=manifest.version)
