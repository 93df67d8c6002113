"""Streaming, resumable index builds.

Phase 1 (encode): documents are read, chunked and encoded in shards of ``docs_per_shard``; each shard's
vectors go to ``.build/shards`` and its documents to the build's doc store, committed together with the
build's progress. A killed build resumes after the last committed shard: no finished shard is encoded twice.
Phase 2 (finalize): the FAISS index is trained on a sample of the shards, filled shard by shard (memory flat
in corpus size), written, and the manifest is committed last. Re-running a killed finalize re-uses the shards.
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
from indexing.index_dir import commit, docstore_file, file_facts, index_file
from indexing.manifest import MANIFEST, Manifest, now, read_manifest, write_json_atomic
from indexing.shards import iter_shards, sample_vectors, write_shard

log = logging.getLogger(__name__)

BUILD_DIR = ".build"


class DocumentEncoder(Protocol):
    """What a build needs from an encoder (``retriever.encoder.Encoder`` satisfies it)."""

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

    def resume_key(self) -> dict[str, Any]:
        """The settings that must match for ``--resume`` to continue a build."""
        key = asdict(self)
        for free in ("batch_size", "nprobe", "factory"):
            key.pop(free)
        return json.loads(json.dumps(key))


Progress = Callable[[int, int], None]
"""Called after every shard with (documents done, passages done)."""


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
) -> Manifest:
    """Build (or resume building) an index at ``out`` and commit it.

    Args:
        documents: returns a fresh iterator over the corpus (called once; resumed builds skip what is done).
        resume: continue an unfinished build in ``out/.build`` (its settings must match).
        overwrite: replace an existing index at ``out`` (the old one stays loadable until the new one commits).

    Raises:
        IndexDirError: ``out`` holds an index (without ``overwrite``) or an unfinished build (without
            ``resume``/``overwrite``), or the unfinished build used other settings.
        CorpusError: bad corpus input (nothing is committed).
    """
    work, previous = _open_workspace(out, config, resume=resume, overwrite=overwrite)

    store = DocStore(work / "docstore.sqlite", readonly=False)
    try:
        shards, docs_done = _encode_phase(work, store, documents, encoder, config, progress)
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
) -> Manifest:
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
    for ids, vectors in iter_shards(work / "shards", shards):
        index.add(np.asarray(ids), np.asarray(vectors))
    index.set_nprobe(config.nprobe)

    version = previous + 1
    names = {"index": index_file(version), "docstore": docstore_file(version)}
    index.save(out / names["index"])
    _link_or_copy(work / "docstore.sqlite", out / names["docstore"])
    store = DocStore(out / names["docstore"], readonly=True)
    max_passages = store.max_passages_per_document()
    store.close()
    checksums, sizes = file_facts(out, list(names.values()))
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


def build_from_vectors(
    out: Path,
    vectors: np.ndarray,
    ids: Iterable[str],
    config: BuildConfig,
    *,
    encoder_record: dict[str, Any] | None = None,
    documents: Callable[[str], Document] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    """Build an index from vectors the user already has, through the same shards and finalize as a corpus build.

    Args:
        vectors: ``(n, dim)`` float32: an array, or an :class:`indexing.npy_file.NpyFile` for a large .npy
            (read block by block with file reads, so memory stays flat).
        ids: ``n`` unique string ids aligned with ``vectors``, consumed lazily (a file's lines, a generator).
        encoder_record: what the manifest records as the encoder (e.g. the model that made the vectors, so
            text queries can be encoded); default: an anonymous encoder (search by vector only).
        documents: optional ``id -> Document`` lookup for titles, text and metadata (default: id only).

    Raises:
        RetrieverError: fewer or more ids than vectors; IndexDirError/CorpusError as :func:`build_index`.
    """
    if vectors.ndim != 2:
        raise RetrieverError(f"vectors must be a 2-d array (n, dim), got shape {vectors.shape}")
    dim, count = int(vectors.shape[1]), int(vectors.shape[0])
    record = encoder_record or {"model": None, "path": None, "preset": None, "dim": dim, "normalized": False}
    work, previous = _open_workspace(out, config, resume=resume, overwrite=overwrite)
    store = DocStore(work / "docstore.sqlite", readonly=False)
    try:
        shards = int(store.get_meta("shards_done", "0"))
        store.rollback_shards(shards)
        step = config.docs_per_shard
        id_stream = itertools.islice(iter(ids), shards * step, None)
        for start in range(shards * step, count, step):
            chunk_ids = [str(i).strip() for i in itertools.islice(id_stream, min(step, count - start))]
            if len(chunk_ids) < min(step, count - start):
                raise RetrieverError(f"{count} vectors but only {start + len(chunk_ids)} ids")
            docs = [documents(i) if documents else Document(i, "", "", origin=f"ids:{start + n + 1}") for n, i in enumerate(chunk_ids)]
            _reject_duplicates(store, docs)
            windows = [[Passage(d.id, 0, 0, len(d.text), d.text)] for d in docs]
            first_pid = int(store.get_meta("next_pid", "0"))
            pids = np.arange(first_pid, first_pid + len(docs), dtype=np.int64)
            write_shard(work / "shards", shards, pids, np.asarray(vectors[start : start + step], dtype=np.float32))
            meta = {"shards_done": str(shards + 1), "docs_done": str(start + len(docs))}
            store.add(docs, windows, shard=shards, meta=meta)
            shards += 1
            if progress:
                progress(start + len(docs), start + len(docs))
        if next(id_stream, None) is not None:
            raise RetrieverError(f"more ids than the {count} vectors")
        total = store.count_passages()
    finally:
        store.close()
    if total == 0:
        raise CorpusError("vectors", "empty corpus")
    return _finalize(out, work, shards, total, total, record, dim, config, previous)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link (the build keeps its copy until the commit) or copy when the filesystem cannot link."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
