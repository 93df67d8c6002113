"""The Searcher: encoder + FAISS index + doc store, answering queries with document-level hits.

```python
from retriever import Searcher
hits = Searcher.load("my-index").search(["what is dense retrieval?"], k=10)[0]
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import ModelError, RetrieverError
from indexing.faiss_index import Metric
from indexing.formats.queries import is_blank  # the one blank-query rule: query files, CLI, service
from indexing.gpu import resolve_index_device, to_device
from indexing.index_dir import OpenIndex, open_index
from retriever.hits import Hit, Hits

log = logging.getLogger(__name__)

PRELOAD_LIMIT = 256 << 20
"""Doc stores up to this size (bytes) are held in memory by default, so hits need no SQLite reads."""

MAX_OVERFETCH = 16
"""At most this many passages per wanted document are fetched before grouping passages into documents."""


def _validate_k(k: int) -> None:
    if k < 1:
        raise RetrieverError(f"k must be >= 1 (got {k})")


def check_queries(queries: Sequence[str]) -> None:
    """Raise RetrieverError for the first blank query (a blank query means nothing; its ranking would be noise)."""
    for number, text in enumerate(queries, 1):
        if is_blank(text):
            which = "the query" if len(queries) == 1 else f"query {number} of {len(queries)}"
            raise RetrieverError(f"{which} is blank: give some text to search for")


class Searcher:
    """Search one index directory. Load with :meth:`load`; the encoder is loaded on the first text query."""

    def __init__(
        self,
        opened: OpenIndex,
        *,
        device: str = "auto",
        encoder: Any | None = None,
        transliterate: bool = False,
        query_backend: str = "auto",
        announce: Callable[[str], None] | None = None,
    ):
        self.opened = opened
        self.transliterate = transliterate
        self.query_backend = "torch" if transliterate else query_backend  # query-only romanization wraps the torch model
        self._announce = announce
        self.manifest = opened.manifest
        self.device = device
        self._encoder = encoder
        self._tombstones = opened.docstore.tombstones()
        self._passages_per_doc = max(1, int(self.manifest.chunking.get("max_passages_per_document", 1)))
        extras = self.manifest.extras
        self.default_nprobe: int | None = extras.get("nprobe")
        self.default_ef_search: int | None = extras.get("ef_search")

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        index_device: str | None = None,
        encoder: Any | None = None,
        transliterate: bool = False,
        mmap: bool | None = None,
        verify: bool | None = None,
        preload: bool | None = None,
        query_backend: str = "auto",
        announce: Callable[[str], None] | None = None,
    ) -> "Searcher":
        """Open the committed index at ``path``.

        Args:
            device: ``auto|cpu|cuda[:N]`` for the query encoder (a CUDA device that is missing is an error).
            index_device: ``auto|cpu|cuda[:N]`` for the FAISS index; None = ``cpu`` when ``device`` is ``cpu``,
                else the GPU when FAISS has GPU support (faiss-gpu) and the CPU otherwise.
            encoder: an already loaded encoder to use for text queries (default: the manifest's).
            transliterate: romanize text queries (uroman) before encoding, whatever the index was built with
                (an index built with ``--transliterate`` romanizes them anyway).
            mmap, verify: see :func:`indexing.index_dir.open_index`.
            preload: hold the doc store in memory (None: when its file is at most ``PRELOAD_LIMIT`` bytes).
            query_backend: ``auto``, ``onnx`` or ``torch`` (see :mod:`retriever.encoders.query_backend`).
            announce: called with a one-line note (e.g. that queries fall back to torch).

        Raises:
            IndexDirError: missing/corrupted index. DeviceError: a GPU was asked for and is missing.
        """
        if device not in ("auto", "cpu"):
            from retriever.devices import resolve_device

            resolve_device(device)  # fail now, not at the first query
        opened = open_index(Path(path), mmap=mmap, verify=verify)
        if preload or (preload is None and opened.docstore.path.stat().st_size <= PRELOAD_LIMIT):
            opened.docstore.preload()
        placement = resolve_index_device(index_device or ("cpu" if device == "cpu" else "auto"))
        if placement != "cpu":
            opened.vectors.index = to_device(opened.vectors.index, placement)
        searcher = cls(opened, device=device, encoder=encoder, transliterate=transliterate,
                       query_backend=query_backend, announce=announce)
        if encoder is not None:
            searcher._check_encoder(encoder)
        return searcher

    @property
    def path(self) -> Path:
        return self.opened.path

    @property
    def encoder(self):
        """The query encoder, loaded on first use: the index's ONNX graph (no torch) or its torch model, as
        ``query_backend`` says."""
        if self._encoder is None:
            from retriever.encoders.query_backend import load_query_encoder

            self._encoder = load_query_encoder(self.path, self.manifest, backend=self.query_backend,  # type: ignore[arg-type]
                                               device=self.device, announce=self._announce)
        if self.transliterate and not getattr(self._encoder, "queries", False):
            from retriever.encoders.crosslingual.transliterate import with_transliteration

            self._encoder = with_transliteration(self._encoder, queries=True)
        return self._encoder

    def _check_encoder(self, encoder: Any) -> None:
        if encoder.dim != self.manifest.dim:
            raise ModelError(f"the model gives {encoder.dim}-d vectors, the index at {self.path} holds {self.manifest.dim}-d")

    def close(self) -> None:
        self.opened.close()

    # --- public search ----------------------------------------------------------------------
    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        filters: Mapping[str, str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        batch_size: int = 64,
    ) -> list[list[Hit]]:
        """Top-``k`` documents for each text query, best first (one list per query).

        Raises:
            RetrieverError: ``k < 1`` or a blank query.
        """
        _validate_k(k)
        check_queries(queries)
        vectors = self.encoder.encode_queries(list(queries), batch_size=batch_size)
        return self.search_vectors(vectors, k, filters=filters, nprobe=nprobe, ef_search=ef_search)

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        filters: Mapping[str, str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` documents for query vectors ``(q, dim)`` float32, with text and metadata."""
        found = self._search_passages(vectors, k, filters, nprobe, ef_search)
        if found is None:
            return [[] for _ in range(len(vectors))]
        scores, pids = found
        docstore = self.opened.docstore
        if self._passages_per_doc == 1:
            # the common case, in one gather for the whole batch: every pid a known document, the store in memory
            records = docstore.gather_records(pids.ravel().tolist())
            if records is not None:
                hits, width = Hit.many(records, scores.ravel().tolist()), pids.shape[1]
                return [hits[at : at + width] for at in range(0, len(hits), width)]
        ranked = self._per_document(vectors, k, scores, pids, filters, nprobe, ef_search)
        return [Hit.many(*docstore.hit_records(p, s)) for p, s in ranked]

    def retrieve(self, queries: Sequence[str], k: int = 10, **options: Any) -> list[Hits]:
        """Ids and scores only (no doc-store reads beyond id mapping): what evaluation needs."""
        _validate_k(k)
        vectors = self.encoder.encode_queries(list(queries), batch_size=options.pop("batch_size", 64))
        return self.retrieve_vectors(vectors, k, **options)

    def retrieve_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        filters: Mapping[str, str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Hits]:
        """Document ids and scores for query vectors ``(q, dim)``."""
        ranked = self._rank(vectors, k, filters, nprobe, ef_search)
        doc_ids = self.opened.docstore.doc_ids(np.array([pid for pids, _ in ranked for pid in pids], dtype=np.int64))
        out, at = [], 0
        for pids, scores in ranked:
            pairs = [(d, s) for d, s in zip(doc_ids[at : at + len(pids)], scores) if d is not None]
            at += len(pids)
            out.append(Hits([d for d, _ in pairs], np.array([s for _, s in pairs], dtype=np.float32)))
        return out

    # --- internals ------------------------------------------------------------------------------
    def _rank(
        self,
        vectors: np.ndarray,
        k: int,
        filters: Mapping[str, str] | None,
        nprobe: int | None,
        ef_search: int | None,
    ) -> list[tuple[list[int], list[float]]]:
        """Per query, ``(pids, scores)`` of up to k passages, one per document (its best passage), best first.

        Unchunked indexes may leave FAISS's -1 (no result) at the end of a row; consumers skip it.
        """
        found = self._search_passages(vectors, k, filters, nprobe, ef_search)
        if found is None:
            return [([], []) for _ in range(len(vectors))]
        return self._per_document(vectors, k, *found, filters, nprobe, ef_search)

    def _per_document(
        self,
        vectors: np.ndarray,
        k: int,
        scores: np.ndarray,
        pids: np.ndarray,
        filters: Mapping[str, str] | None,
        nprobe: int | None,
        ef_search: int | None,
    ) -> list[tuple[list[int], list[float]]]:
        """:meth:`_search_passages`'s arrays as per-query ``(pids, scores)`` lists, one passage per document.

        When the fetched passages of a query hold fewer than k documents (a few long documents can fill the pool),
        that query is searched again with 4x the passages each round, until it has k or the index is exhausted.
        """
        if self._passages_per_doc == 1:  # a pid is a document: no grouping, no id lookup here (fetch == k)
            return list(zip(pids.tolist(), scores.tolist()))
        ranked = self._group(scores, pids, k)
        fetched, total = pids.shape[1], self.opened.vectors.ntotal
        while fetched < total:
            short = [row for row, (found_pids, _) in enumerate(ranked) if len(found_pids) < k]
            if not short:
                break
            fetched = min(fetched * 4, total)
            found = self._search_passages(vectors[short], k, filters, nprobe, ef_search, fetch=fetched)
            if found is None:
                break
            for row, grouped in zip(short, self._group(*found, k)):
                ranked[row] = grouped
        return ranked

    def _search_passages(
        self,
        vectors: np.ndarray,
        k: int,
        filters: Mapping[str, str] | None,
        nprobe: int | None,
        ef_search: int | None,
        fetch: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """FAISS's ``(scores, pids)``, each ``(q, fetch)``, higher scores better: k passages per query when a
        document is one passage, more (to group) otherwise, or exactly ``fetch`` when given. None when
        ``filters`` match no document.

        Raises:
            RetrieverError: k < 1, or vectors of the wrong shape.
        """
        _validate_k(k)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim:
            raise RetrieverError(f"query vectors have shape {vectors.shape}, the index expects (n, {self.manifest.dim})")
        allow = self.opened.docstore.filter_pids(dict(filters)) if filters else None
        if allow is not None and not len(allow):
            return None
        if fetch is None:
            fetch = min(k * min(self._passages_per_doc, MAX_OVERFETCH), max(self.opened.vectors.ntotal, 1))
        scores, pids = self.opened.vectors.search(
            vectors,
            fetch,
            nprobe=nprobe or self.default_nprobe,
            ef_search=ef_search or self.default_ef_search,
            allow=allow,
            deny=self._tombstones if len(self._tombstones) else None,
        )
        if self.manifest.metric == Metric.L2.value:
            scores = -scores
        return scores, pids

    def _group(self, scores: np.ndarray, pids: np.ndarray, k: int) -> list[tuple[list[int], list[float]]]:
        """Passages ``(q, fetch)`` to documents: per query the best passage of each of up to k documents."""
        doc_ids = self.opened.docstore.doc_ids(pids.ravel())
        out = []
        for row in range(len(pids)):
            best: dict[str, tuple[float, int]] = {}
            for col in range(pids.shape[1]):
                pid = int(pids[row, col])
                doc = doc_ids[row * pids.shape[1] + col]
                if pid < 0 or doc is None or doc in best:
                    continue
                best[doc] = (float(scores[row, col]), pid)
                if len(best) == k:
                    break
            out.append(([pid for _, pid in best.values()], [score for score, _ in best.values()]))
        return out
