"""The Python API of an index folder: build, add, upsert, delete, compact, search, info.

Everything ``retriever index ...`` and ``retriever search`` do, for Python users; the CLI only parses its
options, calls this and renders the result.

```python
from retriever import Index

idx = Index.build("corpus.jsonl", "my-index")            # default English model, index type chosen by size
idx.add([{"id": "n1", "title": "New", "text": "A document added later."}])
idx.delete(["d7"])
hits = idx.search("what is dense retrieval?", k=5)        # one query -> its hits
many = idx.search(["first query", "second query"])        # a list of queries -> a list of hit lists
```

Every writing method holds the index's writer lock (``wait``: seconds to wait for another writer) and commits
atomically; searches read the committed version and never write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from indexing.builder import BuildConfig, Progress
from indexing.errors import RetrieverError
from indexing.manifest import Manifest, read_manifest
from indexing.readers import FieldNames
from indexing.updates import UpdateReport
from retriever.corpus import CorpusInput, corpus_label, corpus_reader
from retriever.devices import DocumentBackend, Precision
from retriever.hits import Hit

log = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]


@dataclass(frozen=True)
class BuildOptions:
    """How :meth:`Index.build` encodes and lays out an index (defaults as the CLI's).

    Attributes:
        index: a FAISS factory string (``Flat``, ``IVF4096,Flat``, ``HNSW32``, ``IVF4096,PQ48``) or ``auto``.
        metric: ``ip`` (cosine on normalized vectors) or ``l2``.
        chunk_tokens: passage window in tokens; 0 = one passage per document; None = half the model's length
            (URLs are always one passage).
        chunk_overlap: tokens shared by consecutive windows; None = a quarter of the window.
        engine: ``local`` or ``ray`` (Ray Data workers encode; ``ray_address``/``ray_workers`` configure them).
        num_shards, shard_id: index only this slice of the corpus (merge slices with ``indexing.merge``).
        index_shards: split the FAISS index into this many shards searched in parallel.
        on_disk: IVF only, keep the inverted lists in a memory-mapped file.
        precision: documents' precision, ``auto`` (bf16 on a CPU with native bf16, fp16 on CUDA, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (CUDA); queries are always fp32. Recorded in the manifest, reused by :meth:`Index.add`.
        document_backend: bf16 documents on the CPU by ``auto`` (OpenVINO where installed), ``torch`` or ``openvino``.
    """

    index: str = "auto"
    metric: str = "ip"
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    batch_size: int = 64
    docs_per_shard: int = 4096
    nprobe: int = 16
    engine: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    num_shards: int = 1
    shard_id: int = 0
    index_shards: int = 1
    on_disk: bool = False
    precision: Precision = "auto"
    document_backend: DocumentBackend = "auto"


class Index:
    """An index folder on disk. Make one with :meth:`build`, open one with :meth:`open`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._searchers: dict[tuple[Any, ...], Any] = {}

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        corpus: CorpusInput,
        out: str | Path,
        *,
        model: str | None = None,
        preset: str | None = None,
        fields: FieldNames = FieldNames(),
        device: str = "auto",
        transliterate: bool = False,
        bm25: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        wait: float = 0.0,
        progress: Progress | None = None,
        query_encoder: bool = True,
        announce: Callable[[str], None] | None = None,
        **options: Any,
    ) -> "Index":
        """Encode ``corpus`` and build an index at ``out`` (streaming, resumable, committed atomically).

        Args:
            corpus: paths (JSONL, TSV, CSV, Parquet, gzip, BEIR or text folders; URL lists for ``preset="url"``,
                source trees for ``"code"``) or in-memory records (dicts or Documents).
            model: model alias (``minilm``, ``multilingual-e5-small``), folder or hub id; default: the preset's.
            preset: ``text``, ``crosslingual``, ``url``, ``code`` or ``sql``.
            fields: which record fields hold the id, title and text (default: detected).
            device: ``auto``, ``cpu`` or ``cuda[:N]`` for encoding.
            transliterate: romanize documents and queries (uroman); recorded in the manifest.
            bm25: also build the BM25 index (needs Java), in the same writer-lock hold.
            resume, overwrite: continue an unfinished build / replace an existing index.
            wait: seconds to wait for another writer of ``out``.
            progress: called with (documents done, passages done) after every shard.
            query_encoder: also export the model's query side to ONNX into the index, so searches need no torch
                (a model whose export fails is built without it, and ``announce`` says why).
            announce: called with one-line notes for the user.
            options: fields of :class:`BuildOptions`.

        Raises:
            RetrieverError: bad options, input or model (subclasses say which); IndexLockedError: ``out`` is
            being written by another process.
        """
        from indexing.builder import build_index
        from indexing.lock import writer_lock
        from retriever.encoders.base import load_encoder
        from retriever.models.resolve import resolve_model

        opts = BuildOptions(**options)
        _check_build_options(opts)
        preset_name = resolve_model(model, preset=preset).preset
        read = corpus_reader(corpus, preset=preset_name, fields=fields)
        if bm25:
            import os

            from retriever.search.java import find_java_home

            find_java_home(os.environ)  # no Java: fail now, not after encoding the corpus
        out = Path(out)
        # the lock is taken before the model loads, so a second writer hears at once who holds the index
        with writer_lock(out, "index build" + (" --bm25" if bm25 else ""), wait=wait, create=True):
            # with Ray the workers encode; this process only chunks, so its copy of the model stays on the CPU
            encoder = load_encoder(model, preset=preset, device="cpu" if opts.engine == "ray" else device,
                                   precision=opts.precision, document_backend=opts.document_backend)
            if transliterate:
                from retriever.encoders.crosslingual.transliterate import with_transliteration

                encoder = with_transliteration(encoder, documents=True, queries=True)
            config = build_config(corpus_label(corpus), encoder, preset_name, opts)
            build_index(out, read, encoder, config, resume=resume, overwrite=overwrite, progress=progress,
                        pool=_shard_pool(encoder, opts))
            if bm25:
                from retriever.search.bm25_index import build_bm25

                build_bm25(out, command="index build --bm25")
            if query_encoder:
                _export_query_encoder(out, encoder, announce)
        if announce is not None:  # at the end: an error stays the only line a failed build prints
            announce(f"encoded in {encoder.precision}{' by OpenVINO' * (encoder.document_runtime == 'openvino')} "
                     f"({encoder.precision_note})")
        return cls(out)

    @classmethod
    def open(cls, path: str | Path) -> "Index":
        """Open the index at ``path`` (reads its manifest; nothing else loads until a search).

        Raises:
            IndexDirError: no index there, or its manifest is invalid.
        """
        read_manifest(Path(path))
        return cls(path)

    # --- updating ------------------------------------------------------------------------------
    def add(
        self,
        corpus: CorpusInput,
        *,
        upsert: bool = False,
        fields: FieldNames = FieldNames(),
        batch_size: int = 64,
        device: str = "auto",
        precision: Precision | None = None,
        wait: float = 0.0,
    ) -> UpdateReport:
        """Encode and add documents (paths or records). With ``upsert``, documents whose id exists are replaced
        when changed and skipped when identical; without it an existing id is an error (nothing is added).
        A BM25 index beside the vectors is rebuilt in the same commit. ``precision``: what the new documents are
        encoded in (default: the index's recorded precision, see :class:`BuildOptions`).

        Raises:
            CorpusError: bad input or a duplicate id. IndexLockedError: another writer holds the index.
            DeviceError: fp16 (asked for, or recorded by a GPU build) on the CPU.
        """
        from indexing.lock import writer_lock
        from indexing.updates import add_documents
        from retriever.encoders.base import encoder_from_manifest, precision_for_update
        from retriever.search.bm25_index import bm25_for_update

        manifest = self.info()
        documents = corpus_reader(corpus, preset=manifest.encoder.get("preset") or "text", fields=fields)()
        # the lock is taken before the model loads, so a second writer hears at once who holds the index
        with writer_lock(self.path, "index add" + (" --upsert" if upsert else ""), wait=wait):
            encoder = encoder_from_manifest(manifest.encoder, device=device,
                                            precision=precision_for_update(manifest.encoder, precision, device, self.path))
            report = add_documents(self.path, documents, encoder, upsert=upsert, batch_size=batch_size,
                                   before_commit=bm25_for_update(self.path))
        self._searchers.clear()
        return report

    def upsert(self, corpus: CorpusInput, **options: Any) -> UpdateReport:
        """:meth:`add` with ``upsert=True``."""
        return self.add(corpus, upsert=True, **options)

    def delete(self, ids: Sequence[str], *, wait: float = 0.0) -> UpdateReport:
        """Delete documents by id; ids not in the index are listed in the report's ``missing``."""
        from indexing.updates import delete_documents

        if isinstance(ids, str):
            raise RetrieverError("delete takes a list of ids, not one string")
        report = delete_documents(self.path, list(ids), wait=wait)
        self._searchers.clear()
        return report

    def compact(self, *, wait: float = 0.0) -> UpdateReport:
        """Drop deleted vectors that an index type (HNSW) keeps until compaction."""
        from indexing.updates import compact

        report = compact(self.path, wait=wait)
        self._searchers.clear()
        return report

    def add_query_encoder(self, *, wait: float = 0.0) -> Manifest:
        """Export the model's query side to ONNX into the index (for indexes built without it), so searches need
        no torch. Raises ModelError when the model cannot be exported."""
        from retriever.encoders.query_backend import add_query_encoder

        self._searchers.clear()
        return add_query_encoder(self.path, wait=wait)

    def bm25(self, *, threads: int = 2, wait: float = 0.0) -> Manifest:
        """(Re)build the BM25 index of the documents (needs Java), for ``mode="bm25"``/``"hybrid"``."""
        from retriever.search.bm25_index import build_bm25

        self._searchers.clear()
        return build_bm25(self.path, threads=threads, wait=wait, command="index bm25")

    # --- reading -------------------------------------------------------------------------------
    def info(self) -> Manifest:
        """The committed manifest: model, dim, metric, factory, counts, chunking, files, versions."""
        return read_manifest(self.path)

    @overload
    def search(self, query: str, k: int = 10, **options: Any) -> list[Hit]: ...

    @overload
    def search(self, query: Sequence[str], k: int = 10, **options: Any) -> list[list[Hit]]: ...

    def search(
        self,
        query: str | Sequence[str],
        k: int = 10,
        *,
        mode: SearchMode = "dense",
        filters: Mapping[str, str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
        device: str = "auto",
        query_backend: str = "auto",
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` documents: one query gives its hits, a list of queries a list of hit lists.

        Args:
            mode: ``dense`` (vectors), ``bm25`` or ``hybrid`` (both fused; needs the BM25 index, see :meth:`bm25`).
            filters: metadata ``FIELD -> VALUE`` that every hit must match (applied before the top-k).
            nprobe, ef_search: IVF lists to visit / HNSW beam width (default: the index's).
            fusion, alpha: hybrid fusion (``rrf`` or ``score``) and the dense weight of score fusion.
            device: query encoder device.
            query_backend: ``auto`` (the index's ONNX query encoder when it has one, else torch), ``onnx`` or
                ``torch``.

        Raises:
            RetrieverError: a blank query, k < 1, bad options, or BM25 missing for a BM25 mode.
        """
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        searcher = self._searcher(mode, device, query_backend)
        options: dict[str, Any] = {"filters": dict(filters) if filters else None, "nprobe": nprobe, "ef_search": ef_search}
        if mode != "dense":
            from retriever.search.hybrid import DEFAULT_FUSION, check_options

            check_options(mode, fusion or DEFAULT_FUSION, alpha)
            options.update(mode=mode, fusion=fusion or DEFAULT_FUSION, alpha=alpha)
        elif fusion is not None or alpha is not None:
            raise RetrieverError("fusion and alpha apply to mode='hybrid'")
        results = searcher.search(queries, k, **options)
        return results[0] if single else results

    def close(self) -> None:
        """Release the loaded searchers (the index on disk is untouched)."""
        for searcher in self._searchers.values():
            searcher.close()
        self._searchers.clear()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r})"

    def _searcher(self, mode: SearchMode, device: str, query_backend: str):
        """A cached searcher of the committed version (reloaded after this object's own updates)."""
        key = (mode != "dense", device, query_backend)
        if key not in self._searchers:
            if mode == "dense":
                from retriever.search.searcher import Searcher

                self._searchers[key] = Searcher.load(self.path, device=device, query_backend=query_backend)
            else:
                from retriever.search.hybrid import HybridSearcher

                self._searchers[key] = HybridSearcher.load(self.path, device=device, bm25=True, query_backend=query_backend)

        return self._searchers[key]


def _export_query_encoder(out: Path, encoder: Any, announce: Callable[[str], None] | None) -> None:
    """Commit the ONNX query encoder of a fresh build (the caller holds the lock); a failed export is a note."""
    from indexing.errors import ModelError
    from retriever.encoders.query_backend import add_query_encoder

    try:
        add_query_encoder(out, encoder=encoder, command="index build")
    except ModelError as exc:
        log.warning("%s", exc)
        if announce is not None:
            announce(f"note: built without an ONNX query encoder (searches will load torch): {exc}")


def build_config(corpus: tuple[str, ...], encoder: Any, preset: str, opts: BuildOptions) -> BuildConfig:
    """The :class:`BuildConfig` of a build, with the model's and preset's chunking defaults (RetrieverError: an
    overlap that is negative or not smaller than the window)."""
    window, overlap = chunk_defaults(encoder.max_seq_length, preset, opts.chunk_tokens, opts.chunk_overlap)
    return BuildConfig(
        corpus=corpus, factory=opts.index, metric=opts.metric, chunk_tokens=window, chunk_overlap=overlap,
        batch_size=opts.batch_size, docs_per_shard=opts.docs_per_shard, nprobe=opts.nprobe, encoder=encoder.describe(),
        engine=opts.engine, num_shards=opts.num_shards, shard_id=opts.shard_id, index_shards=opts.index_shards,
        on_disk=opts.on_disk,
    )


def chunk_defaults(max_seq_length: int, preset: str, chunk_tokens: int | None, chunk_overlap: int | None) -> tuple[int, int]:
    """``(window, overlap)`` in tokens: half the model's length and a quarter of that by default; a URL is one
    passage (window 0).

    Raises:
        RetrieverError: an overlap that is negative or not smaller than the window.
    """
    from retriever.encoders.presets import get_preset

    default_window = 0 if get_preset(preset).documents == "urls" else max_seq_length // 2
    window = default_window if chunk_tokens is None else chunk_tokens
    overlap = (window // 4 if window else 0) if chunk_overlap is None else chunk_overlap
    if window < 0 or overlap < 0 or (window and overlap >= window):
        raise RetrieverError(f"--chunk-overlap {overlap} must be >= 0 and smaller than --chunk-tokens {window}")
    return window, overlap


def _check_build_options(opts: BuildOptions) -> None:
    from retriever.devices import PRECISIONS

    if opts.precision not in PRECISIONS:
        raise RetrieverError(f"--precision {opts.precision!r}: use one of {', '.join(PRECISIONS)}")
    if opts.metric not in ("ip", "l2"):
        raise RetrieverError(f"--metric {opts.metric!r}: use ip or l2")
    if opts.engine not in ("local", "ray"):
        raise RetrieverError(f"--engine {opts.engine!r}: use local or ray")
    if opts.engine == "local" and (opts.ray_address or opts.ray_workers):
        raise RetrieverError("--ray-address/--ray-workers need --engine ray")


def _shard_pool(encoder: Any, opts: BuildOptions) -> Any:
    """The Ray shard pool of ``--engine ray`` (None for local builds)."""
    if opts.engine != "ray":
        return None
    from retriever.distributed import RayShardPool

    return RayShardPool(encoder.describe(), address=opts.ray_address, workers=opts.ray_workers, batch_size=opts.batch_size)

