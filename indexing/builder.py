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
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil

from indexing.chunking import chunk_documents
from indexing.docstore import DocStore
from indexing.documents import Document, Passage
from indexing.errors import CorpusError, IndexDirError, RetrieverError
from indexing.factory import choose_factory, ivf_lists, training_sample_size
from indexing.faiss_index import Metric, VectorIndex
from indexing.index_dir import commit, docstore_file, file_facts, new_tag, remove_tagged
from indexing.layout import balanced_partition, write_vector_files
from indexing.lock import writer_lock
from indexing.manifest import MANIFEST, Manifest, now, read_manifest, write_json_atomic
from indexing.shards import read_shard, sample_vectors, write_shard

log = logging.getLogger(__name__)

BUILD_DIR = ".build"


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
    work, previous = _open_workspace(out, config, resume=resume, overwrite=overwrite)

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
    return _finalize(out, work, shards, total_passages, docs_done, encoder.describe(), encoder.dim, config, previous)


def _open_workspace(out: Path, config: BuildConfig, *, resume: bool, overwrite: bool) -> tuple[Path, int]:
    """Prepare ``out/.build`` for a new or resumed build; returns it and the committed version it will replace."""
    work = out / BUILD_DIR
    previous = _previous_version(out, overwrite)
    if work.exists() and not resume:
        if not overwrite:
            raise IndexDirError(f"{out}: an unfinished build is there; pass --resume to continue or --overwrite to restart")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_or_save_config(work, config)
    return work, previous


def _previous_version(out: Path, overwrite: bool) -> int:
    if (out / MANIFEST).is_file():
        if not overwrite:
            raise IndexDirError(f"{out}: an index exists there; use --overwrite to replace it or `retriever index add`")
        return read_manifest(out).version
    return 0


def _check_or_save_config(work: Path, config: BuildConfig) -> None:
    saved = work / "build.json"
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        if before.get("resume_key") != config.resume_key():
            raise IndexDirError(f"{work}: the unfinished build used other settings; use --overwrite to restart it")
        return
    write_json_atomic(saved, json.dumps({"config": asdict(config), "resume_key": config.resume_key()}, indent=2))


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
        windows = chunk_documents(batch, encoder.tokenizer, chunk_tokens=config.chunk_tokens, overlap=config.chunk_overlap)
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
        windows = chunk_documents(batch, encoder.tokenizer, chunk_tokens=config.chunk_tokens, overlap=config.chunk_overlap)
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


def _finalize(
    out: Path,
    work: Path,
    shards: int,
    total: int,
    docs: int,
    encoder_record: dict[str, Any],
    dim: int,
    config: BuildConfig,
    previous: int,
    starts: list[int] | None = None,
) -> Manifest:
    """Train, fill and write the FAISS file(s) from the build shards, then commit the manifest.

    ``starts``: first build shard of each index shard (default: ``config.index_shards`` balanced parts).
    """
    metric = Metric(config.metric)
    factory = config.factory
    if factory == "auto":
        factory = choose_factory(total, dim, memory_bytes=psutil.virtual_memory().available)
        log.info("--index auto chose %s for %d vectors", factory, total)
    index = VectorIndex.create(dim, factory, metric)
    if not index.is_trained:
        size = training_sample_size(factory)
        if total < 39 * max(1, ivf_lists(factory)):
            raise RetrieverError(f"{factory} needs at least {39 * ivf_lists(factory)} vectors to train; the corpus has {total}")
        index.train(sample_vectors(work / "shards", shards, size))
    index.set_nprobe(config.nprobe)

    version = previous + 1
    if starts is None:
        lengths = [read_shard(work / "shards", n)[0].shape[0] for n in range(shards)]
        starts = balanced_partition(lengths, config.index_shards) if config.index_shards > 1 else [0]
    shard_dir = work / "shards"
    tag = new_tag(version)
    try:
        names = write_vector_files(
            out, tag, index, lambda n: read_shard(shard_dir, n), shards,
            starts=starts, on_disk=config.on_disk, scratch=work / "blocks",
        )
        names["docstore"] = docstore_file(tag)
        _link_or_copy(work / "docstore.sqlite", out / names["docstore"])
        store = DocStore(out / names["docstore"], readonly=True)
        max_passages = store.max_passages_per_document()
        store.close()
        checksums, sizes = file_facts(out, list(names.values()))
    except BaseException:
        remove_tagged(out, tag)  # only this build's files; the committed version stays as it was
        raise
    stamp = now()
    manifest = Manifest(
        version=version,
        encoder=encoder_record,
        dim=dim,
        metric=metric.value,
        factory=factory,
        factory_requested=config.factory,
        files=names,
        checksums=checksums,
        sizes=sizes,
        counts={"documents": docs, "passages": total, "tombstones": 0},
        chunking={"chunk_tokens": config.chunk_tokens, "overlap": config.chunk_overlap, "max_passages_per_document": max_passages},
        build={**asdict(config), "encoder": None, "peak_rss_bytes": peak_rss_bytes()},
        extras={"nprobe": config.nprobe},
        created=stamp,
        updated=stamp,
    )
    commit(out, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link (the build keeps its copy until the commit) or copy when the filesystem cannot link."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
