"""Streaming, resumable index builds.

Phase 1 (encode): documents are read, chunked and encoded in shards of ``docs_per_shard``; each shard's
vectors go to ``.build/shards`` and its documents to the build's doc store, committed together with the
build's progress. A killed build resumes after the last committed shard: no finished shard is encoded twice.
Phase 2 (finalize): the FAISS index is trained on a sample of the shards, filled shard by shard (memory flat
in corpus size), written, and the manifest is committed last. Re-running a killed finalize re-uses the shards.

With a :class:`ShardPool` (``--engine ray``) phase 1 is split in two: the documents are read, chunked and
committed to the doc store shard by shard (*planned*), then the pool encodes every planned shard whose vector
file is missing, anywhere it likes (Ray workers), writing the same shard files. A resumed or retried build
re-encodes only missing shards; phase 2 is unchanged.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexing.chunking import chunk_documents
from indexing.docstore import DocStore
from indexing.documents import Document, Passage
from indexing.errors import CorpusError, IndexDirError, RetrieverError
from indexing.lock import writer_lock
from indexing.manifest import Manifest
from indexing.shards import read_shard, write_shard
from indexing.workspace import finalize, open_workspace

log = logging.getLogger(__name__)

CHUNK_GROUP = 256
"""Documents tokenized per call while chunking: the fast tokenizer's batch output (token strings, offsets, per
document, built by its worker threads) costs ~80 MiB of native memory per 1,000 SciFact abstracts, and is
retained by the C allocator afterwards; tokenizing a shard's 4,096 documents in one call added ~360 MiB to a
build's peak. Each document is tokenized alone (no padding or truncation), so the windows are the same."""


class DocumentEncoder(Protocol):
    """What a build needs from an encoder (``retriever.encoders.base.Encoder`` satisfies it)."""

    dim: int

    @property
    def tokenizer(self) -> Any: ...

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class BuildConfig:
    """Parameters of one build; saved in ``.build/build.json`` and in the manifest.

    Attributes:
        corpus: corpus paths as given (recorded for reproducibility and resume checks).
        factory: a FAISS factory string, or ``"auto"``.
        metric: ``"ip"`` or ``"l2"``.
        chunk_tokens: window length in tokens; 0 = one passage per document, truncated by the model.
        chunk_overlap: tokens shared by consecutive windows.
        batch_size: encoder batch size.
        docs_per_shard: documents per committed shard (the unit of resume).
        nprobe: default IVF lists visited at search time.
        engine: ``"local"`` (encode in this process) or the name of a :class:`ShardPool` (``"ray"``).
        num_shards, shard_id: index only documents at positions ``shard_id, shard_id + num_shards, ...``
            of the corpus (for builds scheduled by the user, merged with ``indexing.merge``).
        index_shards: split the FAISS index into this many shards searched in parallel (see ``indexing.layout``).
        on_disk: keep IVF inverted lists in a memory-mapped ``.ivfdata`` file, for indexes larger than RAM.
    """

    corpus: tuple[str, ...]
    factory: str = "auto"
    metric: str = "ip"
    chunk_tokens: int = 0
    chunk_overlap: int = 0
    batch_size: int = 64
    docs_per_shard: int = 4096
    nprobe: int = 16
    encoder: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"
    num_shards: int = 1
    shard_id: int = 0
    index_shards: int = 1
    on_disk: bool = False

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_id < self.num_shards:
            raise RetrieverError(f"--shard-id {self.shard_id} must be in 0..{self.num_shards - 1} (--num-shards {self.num_shards})")
        if self.index_shards < 1:
            raise RetrieverError(f"--index-shards {self.index_shards} must be >= 1")

    def resume_key(self) -> dict[str, Any]:
        """The settings that must match for ``--resume`` to continue a build."""
        key = asdict(self)
        for free in ("batch_size", "nprobe", "factory", "index_shards", "on_disk"):
            key.pop(free)
        return json.loads(json.dumps(key))


Progress = Callable[[int, int], None]
"""Called after every shard with (documents done, passages done)."""


class ShardPool(Protocol):
    """Encodes planned shards of a build workspace, e.g. on a Ray cluster (``retriever.distributed``).

    For each shard number it must write ``work/shards/NNNNNN{.npy,.ids.npy}`` with
    :func:`indexing.shards.write_shard`, from :func:`shard_inputs` (``work/docstore.sqlite`` is not written
    while the pool runs). Writes are atomic, so a retried task may rewrite a shard and a killed pool leaves
    only whole shards. ``done(number)`` is called as shards finish (any order).
    """

    def encode_shards(self, work: Path, numbers: Sequence[int], done: Callable[[int], None]) -> None: ...


def shard_inputs(docstore: Path, number: int) -> tuple[np.ndarray, list[str]]:
    """The pids ``(n,)`` int64 and texts (as :func:`passage_inputs` makes them) of planned shard ``number``.

    Raises:
        IndexDirError: the build's doc store has no such planned shard.
    """
    store = DocStore(docstore, readonly=True)
    try:
        span = store.get_meta(f"shard.{number}")
        if span is None:
            raise IndexDirError(f"{docstore}: shard {number} was not planned")
        first, stop = (int(v) for v in span.split())
        pids, texts = [], []
        for pid, doc_id, title, passage in store.passage_texts(first, stop):
            pids.append(pid)
            texts.extend(passage_inputs(Document(doc_id, title, passage), [Passage(doc_id, 0, 0, len(passage), passage)]))
    finally:
        store.close()
    return np.asarray(pids, dtype=np.int64), texts


def passage_inputs(doc: Document, passages: Sequence[Passage]) -> list[str]:
    """The texts encoded for a document's passages: the title before each passage (BEIR's ``title + " " + text``)."""
    return [f"{doc.title} {p.text}".strip() if doc.title else p.text for p in passages]


def build_index(
    out: Path,
    documents: Callable[[], Iterable[Document]],
    encoder: DocumentEncoder,
    config: BuildConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    pool: ShardPool | None = None,
    wait: float = 0.0,
) -> Manifest:
    """Build (or resume building) an index at ``out`` and commit it, holding the index's writer lock.

    Args:
        documents: returns a fresh iterator over the corpus (called once; resumed builds skip what is done).
            With ``config.num_shards > 1`` only this build's slice of it is indexed.
        resume: continue an unfinished build in ``out/.build`` (its settings must match).
        overwrite: replace an existing index at ``out`` (the old one stays loadable until the new one commits).
        pool: encode planned shards with this pool (``config.engine`` names it) instead of ``encoder``;
            ``encoder`` then only chunks and describes.
        wait: seconds to wait for another writer of ``out`` (see :func:`indexing.lock.writer_lock`).

    Raises:
        IndexDirError: ``out`` holds an index (without ``overwrite``) or an unfinished build (without
            ``resume``/``overwrite``), or the unfinished build used other settings.
        IndexLockedError: another process writes ``out``.
        CorpusError: bad corpus input (nothing is committed).
    """
    if (pool is None) != (config.engine == "local"):
        raise RetrieverError(f"engine {config.engine!r} needs a matching shard pool")
    if config.num_shards > 1:
        whole = documents
        documents = lambda: itertools.islice(iter(whole()), config.shard_id, None, config.num_shards)  # noqa: E731
    with writer_lock(out, "index build", wait=wait, create=True):
        return _build_locked(out, documents, encoder, config, resume=resume, overwrite=overwrite, progress=progress, pool=pool)


def _build_locked(
    out: Path,
    documents: Callable[[], Iterable[Document]],
    encoder: DocumentEncoder,
    config: BuildConfig,
    *,
    resume: bool,
    overwrite: bool,
    progress: Progress | None,
    pool: ShardPool | None,
) -> Manifest:
    work, previous = open_workspace(out, config, resume=resume, overwrite=overwrite)

    store = DocStore(work / "docstore.sqlite", readonly=False)
    try:
        if pool is None:
            shards, docs_done = _encode_phase(work, store, documents, encoder, config, progress)
        else:
            shards, docs_done = _plan_phase(work, store, documents, encoder, config)
            _pool_phase(work, store, shards, pool, progress)
        total_passages = store.count_passages()
    finally:
        store.close()
    if docs_done == 0:
        raise CorpusError(", ".join(config.corpus) or "corpus", "empty corpus")
    return finalize(out, work, shards, total_passages, docs_done, encoder.describe(), encoder.dim, config, previous)


def _encode_phase(
    work: Path,
    store: DocStore,
    documents: Callable[[], Iterable[Document]],
    encoder: DocumentEncoder,
    config: BuildConfig,
    progress: Progress | None,
) -> tuple[int, int]:
    shards = int(store.get_meta("shards_done", "0"))
    docs_done = int(store.get_meta("docs_done", "0"))
    store.rollback_shards(shards)  # rows of a shard whose commit did not finish
    if store.get_meta("encoding_done") == "1":
        return shards, docs_done
    if docs_done:
        log.info("resuming after %d documents (%d shards)", docs_done, shards)
    stream: Iterator[Document] = itertools.islice(iter(documents()), docs_done, None)
    passages_done = store.count_passages()
    if progress:
        progress(docs_done, passages_done)
    for batch in _batched(stream, config.docs_per_shard):
        _reject_duplicates(store, batch)
        windows = _chunk(batch, encoder, config)
        texts = [text for doc, ps in zip(batch, windows) for text in passage_inputs(doc, ps)]
        vectors = encoder.encode_documents(texts, batch_size=config.batch_size)
        first_pid = int(store.get_meta("next_pid", "0"))
        write_shard(work / "shards", shards, np.arange(first_pid, first_pid + len(texts), dtype=np.int64), vectors)
        docs_done += len(batch)
        meta = {"shards_done": str(shards + 1), "docs_done": str(docs_done)}
        store.add(batch, windows, shard=shards, meta=meta)
        shards += 1
        passages_done += len(texts)
        if progress:
            progress(docs_done, passages_done)
    store.set_meta({"encoding_done": "1"})
    return shards, docs_done


def _plan_phase(
    work: Path, store: DocStore, documents: Callable[[], Iterable[Document]], encoder: DocumentEncoder, config: BuildConfig
) -> tuple[int, int]:
    """Read and chunk the corpus into doc-store shards (no encoding); each shard's pid span goes to the meta table."""
    shards = int(store.get_meta("shards_done", "0"))
    docs_done = int(store.get_meta("docs_done", "0"))
    store.rollback_shards(shards)
    if store.get_meta("planning_done") == "1":
        return shards, docs_done
    stream: Iterator[Document] = itertools.islice(iter(documents()), docs_done, None)
    for batch in _batched(stream, config.docs_per_shard):
        _reject_duplicates(store, batch)
        windows = _chunk(batch, encoder, config)
        first_pid = int(store.get_meta("next_pid", "0"))
        stop = first_pid + sum(len(ps) for ps in windows)
        docs_done += len(batch)
        meta = {"shards_done": str(shards + 1), "docs_done": str(docs_done), f"shard.{shards}": f"{first_pid} {stop}"}
        store.add(batch, windows, shard=shards, meta=meta)
        shards += 1
    store.set_meta({"planning_done": "1"})
    return shards, docs_done


def _pool_phase(work: Path, store: DocStore, shards: int, pool: ShardPool, progress: Progress | None) -> None:
    """Have ``pool`` encode every planned shard without a complete vector file, then check all of them."""
    counts = store.shard_counts()  # shard -> (documents, passages)
    expected = {n: counts.get(n, (0, 0))[1] for n in range(shards)}
    missing = [n for n in range(shards) if not _shard_complete(work / "shards", n, expected[n])]
    done_docs = sum(counts.get(n, (0, 0))[0] for n in range(shards) if n not in set(missing))
    done_passages = sum(expected[n] for n in range(shards) if n not in set(missing))
    if missing:
        log.info("encoding %d of %d shards with the %s pool", len(missing), shards, type(pool).__name__)
    if progress:
        progress(done_docs, done_passages)

    def done(number: int) -> None:
        nonlocal done_docs, done_passages
        done_docs += counts.get(number, (0, 0))[0]
        done_passages += expected[number]
        if progress:
            progress(done_docs, done_passages)

    if missing:
        pool.encode_shards(work, missing, done)
    incomplete = [n for n in missing if not _shard_complete(work / "shards", n, expected[n])]
    if incomplete:
        raise RetrieverError(f"the shard pool did not write shard(s) {incomplete[:5]}; rerun with --resume")


def _shard_complete(directory: Path, number: int, passages: int) -> bool:
    """Both files of a shard are there (each written atomically) with ``passages`` rows."""
    if not (directory / f"{number:06d}.ids.npy").is_file() or not (directory / f"{number:06d}.npy").is_file():
        return False
    ids, vectors = read_shard(directory, number)
    return ids.shape[0] == vectors.shape[0] == passages


def _chunk(batch: list[Document], encoder: DocumentEncoder, config: BuildConfig) -> list[list[Passage]]:
    """:func:`chunk_documents` over ``batch``, :data:`CHUNK_GROUP` documents per tokenizer call."""
    windows: list[list[Passage]] = []
    for start in range(0, len(batch), CHUNK_GROUP):
        windows += chunk_documents(batch[start : start + CHUNK_GROUP], encoder.tokenizer,
                                   chunk_tokens=config.chunk_tokens, overlap=config.chunk_overlap)
    return windows


def _batched(items: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _reject_duplicates(store: DocStore, batch: list[Document]) -> None:
    """Fail before encoding when a batch repeats an id (within itself or with earlier documents)."""
    seen: dict[str, Document] = {}
    for doc in batch:
        if doc.id in seen:
            _raise_duplicate(doc)
        seen[doc.id] = doc
    existing = store.existing(list(seen))
    if existing:
        _raise_duplicate(next(d for d in batch if d.id in existing))


def _raise_duplicate(doc: Document) -> None:
    path, _, line = doc.origin.rpartition(":")
    if path and line.isdigit():
        raise CorpusError(path, f"duplicate id {doc.id!r}", line=int(line), field="id")
    raise CorpusError(doc.origin or "corpus", f"duplicate id {doc.id!r}", field="id")


