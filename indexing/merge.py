"""Merge indexes built separately (``--num-shards N --shard-id I`` runs) into one index.

The stored vectors of each input are read back (exactly: inputs must keep full vectors) in pid order and
written, with the documents and passages of its doc store, as build shards of a new workspace; the normal
finalize then trains and fills the merged FAISS index (one file, or one index shard per input with
``sharded``) and commits it. Deleted documents are not carried over.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexing.builder import BuildConfig
from indexing.workspace import finalize, open_workspace
from indexing.docstore import DocStore
from indexing.documents import Passage
from indexing.errors import IndexDirError, RetrieverError
from indexing.index_dir import open_index
from indexing.lock import writer_lock
from indexing.layout import is_sharded
from indexing.manifest import Manifest, read_manifest
from indexing.shards import write_shard

log = logging.getLogger(__name__)

LOSSLESS = re.compile(r"(IDMap2?,)?Flat|IVF\d+,Flat|HNSW\d+(,Flat)?")
"""Factories whose stored vectors are the original float32 vectors (what merge reads back)."""

ENCODER_KEYS = ("model", "preset", "dim", "normalized", "pooling", "query_prefix", "document_prefix", "max_seq_length")
"""Encoder fields that must agree between merged indexes (the model's path may differ between machines)."""

DOCS_PER_SHARD = 4096


def check_compatible(inputs: Sequence[Path], manifests: Sequence[Manifest]) -> None:
    """Raise IndexDirError (one line, naming the input) unless all indexes can be merged."""
    first = manifests[0]
    for path, manifest in zip(inputs, manifests):
        if is_sharded(manifest):
            raise IndexDirError(f"{path}: a sharded index cannot be merged again; merge the original shard indexes")
        if not LOSSLESS.fullmatch(manifest.factory):
            raise IndexDirError(
                f"{path}: {manifest.factory} does not keep full vectors; build the shards with --index Flat "
                "(the merged index gets its own --index)"
            )
        checks = [
            ("encoder", {k: first.encoder.get(k) for k in ENCODER_KEYS}, {k: manifest.encoder.get(k) for k in ENCODER_KEYS}),
            ("dim", first.dim, manifest.dim),
            ("metric", first.metric, manifest.metric),
            ("chunking", {k: first.chunking.get(k) for k in ("chunk_tokens", "overlap")},
             {k: manifest.chunking.get(k) for k in ("chunk_tokens", "overlap")}),
        ]
        for what, want, got in checks:
            if want != got:
                diff = {k: got[k] for k in got if want.get(k) != got[k]} if isinstance(got, dict) else got
                raise IndexDirError(f"{path}: {what} {diff} differs from {inputs[0]}'s; merge only indexes built alike")


def merge_indexes(
    inputs: Sequence[Path],
    out: Path,
    *,
    factory: str | None = None,
    sharded: bool = False,
    on_disk: bool = False,
    nprobe: int | None = None,
    overwrite: bool = False,
    wait: float = 0.0,
) -> Manifest:
    """Merge ``inputs`` (same encoder, dim, metric and chunking) into a new index at ``out``, holding the
    writer lock of ``out`` (``wait``: seconds to wait for another writer). The inputs are only read.

    Args:
        factory: FAISS factory of the merged index (default: what the inputs asked for, if they agree, else auto).
        sharded: one index shard per input, searched in parallel (see ``indexing.layout``).

    Raises:
        IndexDirError: incompatible or unreadable inputs, or ``out`` exists (without ``overwrite``).
        IndexLockedError: another process writes ``out``.
        CorpusError: a document id is in two inputs.
    """
    with writer_lock(out, "index merge", wait=wait, create=True):
        return _merge_locked(inputs, out, factory=factory, sharded=sharded, on_disk=on_disk, nprobe=nprobe, overwrite=overwrite)


def _merge_locked(
    inputs: Sequence[Path], out: Path, *, factory: str | None, sharded: bool, on_disk: bool, nprobe: int | None, overwrite: bool
) -> Manifest:
    if not inputs:
        raise RetrieverError("give the indexes to merge")
    inputs = [Path(p) for p in inputs]
    if any(p.resolve() == out.resolve() for p in inputs):
        raise IndexDirError(f"{out}: the output cannot be one of the inputs")
    manifests = [read_manifest(p) for p in inputs]
    check_compatible(inputs, manifests)
    first = manifests[0]
    requested = {m.factory_requested for m in manifests}
    config = BuildConfig(
        corpus=tuple(str(p) for p in inputs),
        factory=factory or (requested.pop() if len(requested) == 1 else "auto"),
        metric=first.metric,
        chunk_tokens=first.chunking.get("chunk_tokens", 0),
        chunk_overlap=first.chunking.get("overlap", 0),
        docs_per_shard=DOCS_PER_SHARD,
        nprobe=nprobe or int(first.extras.get("nprobe", 16)),
        encoder=first.encoder,
        on_disk=on_disk,
    )
    work, previous = open_workspace(out, config, resume=False, overwrite=True if overwrite else _fresh(out))
    store = DocStore(work / "docstore.sqlite", readonly=False)
    starts, shards, docs = [], 0, 0
    try:
        for path in inputs:
            starts.append(shards)
            shards, added = _copy_index(path, work, store, shards)
            docs += added
        total = store.count_passages()
    finally:
        store.close()
    if total == 0:
        raise IndexDirError(f"{', '.join(map(str, inputs))}: nothing to merge (no passages)")
    starts = _non_empty(starts, shards) if sharded else [0]
    config = replace(config, index_shards=len(starts))
    return finalize(out, work, shards, total, docs, first.encoder, first.dim, config, previous, starts=starts)


def _fresh(out: Path) -> bool:
    """Without --overwrite, a leftover unfinished merge is replaced but a committed index is kept (error)."""
    if (out / "manifest.json").is_file():
        raise IndexDirError(f"{out}: an index exists there; use --overwrite to replace it")
    return True


def _non_empty(starts: list[int], count: int) -> list[int]:
    """Drop index shards of inputs that contributed no build shard."""
    bounds = starts + [count]
    return [s for i, s in enumerate(starts) if bounds[i + 1] > s]


def _copy_index(path: Path, work: Path, store: DocStore, shard: int) -> tuple[int, int]:
    """Append the live documents, passages and vectors of the index at ``path`` as build shards from ``shard``.

    Returns the next shard number and the number of documents copied.
    """
    opened = open_index(path, mmap=True)
    source = opened.docstore
    documents = 0
    try:
        after = -1
        pending: list[tuple[int, str, int, int, int]] = []
        while True:
            rows = source.passage_rows(after, 20_000)
            if rows:
                after = rows[-1][0]
                pending += rows
            # cut at document boundaries (a document's passages have consecutive pids)
            while cut := (len(pending) if not rows else _last_boundary(pending, DOCS_PER_SHARD)):
                batch, pending = pending[:cut], pending[cut:]
                documents += _write_batch(opened, batch, work, store, shard)
                shard += 1
            if not rows:
                break
    finally:
        opened.close()
    return shard, documents


def _last_boundary(rows: list[tuple[int, str, int, int, int]], docs: int) -> int:
    """Index just after the ``docs``-th document of ``rows``, or 0 if ``rows`` may hold fewer complete ones."""
    seen = 0
    for i in range(1, len(rows)):
        if rows[i][1] != rows[i - 1][1]:
            seen += 1
            if seen == docs:
                return i
    return 0


def _write_batch(opened, rows: list[tuple[int, str, int, int, int]], work: Path, store: DocStore, shard: int) -> int:
    doc_ids = list(dict.fromkeys(r[1] for r in rows))
    found = opened.docstore.documents(doc_ids)
    docs = [found[d] for d in doc_ids]
    windows: dict[str, list[Passage]] = {d: [] for d in doc_ids}
    for _, doc_id, index, start, end in rows:
        windows[doc_id].append(Passage(doc_id, index, start, end, found[doc_id].text[start:end]))
    old_pids = np.array([r[0] for r in rows], dtype=np.int64)
    vectors = opened.vectors.reconstruct(old_pids)
    first = int(store.get_meta("next_pid", "0"))
    write_shard(work / "shards", shard, np.arange(first, first + len(rows), dtype=np.int64), vectors)
    store.add(docs, [windows[d] for d in doc_ids], shard=shard, meta={"shards_done": str(shard + 1)})
    return len(docs)
