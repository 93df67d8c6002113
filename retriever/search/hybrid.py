"""Dense, BM25 and hybrid search over one index directory, all answering with :class:`Hit` lists.

```python
from retriever.search.hybrid import HybridSearcher
searcher = HybridSearcher.load("my-index")
hits = searcher.search(["what is dense retrieval?"], k=10, mode="hybrid")[0]
```

Hybrid = fusion of the dense top-``depth`` documents and the BM25 top-``depth`` documents, cut to ``k``.
BM25 results honour deletions (a document the doc store no longer holds is dropped) and metadata
filters (only documents whose metadata match are kept; the BM25 search over-fetches until ``k`` survive).
The BM25 index is the one the manifest names (see :mod:`retriever.search.bm25_index`); searching never writes it:
when it is missing or stale, a bm25/hybrid search raises :class:`retriever.search.bm25_index.Bm25NotReadyError`, which
names the command that builds it (``retriever index bm25 INDEX``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexing.errors import RetrieverError
from retriever.search.bm25 import LuceneBM25
from retriever.search.fusion import normalized_score_fusion, reciprocal_rank_fusion
from retriever.hits import Hits
from retriever.hits import Hit
from retriever.search.searcher import Searcher, check_queries

logger = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["rrf", "score"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "score")

DEFAULT_DEPTH = 100
"""Documents taken from each of the dense and BM25 lists before fusion (at least ``k``)."""
RRF_K = 60
"""The reciprocal rank fusion constant (Cormack et al. 2009; Pyserini's default)."""

# Defaults chosen on SciFact's TRAIN split only (809 judged queries; all-MiniLM-L6-v2 unchunked, Flat;
# BM25 k1=0.9 b=0.4; the top 100 of each list fused). The test split played no part. nDCG@10 on train:
# BM25 0.697, dense 0.660, RRF (k=60) 0.714, score fusion 0.735 at alpha 0.45 (best of the grid
# 0.0..1.0 step 0.05; alpha 0.35-0.50 all within 0.005 of it), so score fusion is the default.
# (Weighted RRF peaked at 0.721, below score fusion, so RRF keeps no weight.) Reproduce with
# `retriever eval INDEX scifact --mode hybrid --tune-alpha` (tunes on train, reports test).
DEFAULT_FUSION: Fusion = "score"
DEFAULT_ALPHA = 0.45
"""Weight of the dense scores in score fusion: ``alpha * dense + (1 - alpha) * bm25`` (min-max normalised)."""


def check_options(mode: str, fusion: str, alpha: float | None) -> None:
    """Validate a mode / fusion / alpha combination.

    Raises:
        RetrieverError: unknown mode or fusion, alpha outside [0, 1], or alpha given with RRF.
    """
    if mode not in MODES:
        raise RetrieverError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise RetrieverError(f"unknown fusion {fusion!r}: use {', '.join(FUSIONS)}")
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise RetrieverError(f"alpha must be in [0, 1] (got {alpha})")
        if fusion != "score":
            raise RetrieverError("alpha (the dense weight) applies to score fusion only; RRF has no weight")


def fuse(dense: Hits, sparse: Hits, k: int, *, fusion: Fusion = DEFAULT_FUSION, alpha: float | None = None) -> Hits:
    """Fuse one query's dense and BM25 lists and keep the best ``k``.

    ``rrf``: reciprocal rank fusion with :data:`RRF_K`; ``score``: ``alpha * dense + (1 - alpha) * bm25``
    on min-max normalised scores (``alpha`` None: :data:`DEFAULT_ALPHA`). Raises RetrieverError on bad options.
    """
    check_options("hybrid", fusion, alpha)
    if fusion == "rrf":
        fused = reciprocal_rank_fusion([dense, sparse], k=RRF_K)
    else:
        fused = normalized_score_fusion(dense, sparse, alpha=DEFAULT_ALPHA if alpha is None else alpha)
    return Hits(fused.ids[:k], fused.scores[:k])


class HybridSearcher:
    """A :class:`Searcher` plus the BM25 index beside it. BM25 (and Java) load only when a mode needs them."""

    def __init__(self, searcher: Searcher, *, bm25: LuceneBM25 | None = None):
        """Args:
        searcher: the dense searcher of the index directory.
        bm25: an opened BM25 index of the same documents (default: the one the manifest names, opened on
            first use).
        """
        self.searcher = searcher
        self._bm25 = bm25
        self._bm25_complete: bool | None = None  # True when BM25 holds no deleted documents

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        index_device: str | None = None,
        encoder: Any | None = None,
        bm25: bool = False,
        **options: Any,
    ) -> "HybridSearcher":
        """Open the index at ``path`` (see :meth:`Searcher.load`).

        Args:
            bm25: open the BM25 index now (for bm25/hybrid searches) rather than on first use.
            options: more :meth:`Searcher.load` options (``query_backend``, ``announce``, ``mmap``, ...).

        Raises:
            IndexDirError: missing/corrupted index. Bm25NotReadyError: ``bm25`` and the index has no current
                BM25 index (checked before the dense index loads).
        """
        if bm25:
            from indexing.manifest import read_manifest
            from retriever.search.bm25_index import check_bm25

            check_bm25(Path(path), read_manifest(Path(path)))  # fail fast, before loading vectors
        searcher = cls(Searcher.load(path, device=device, index_device=index_device, encoder=encoder, **options))
        if bm25:
            try:
                searcher.bm25
            except BaseException:
                searcher.close()
                raise
        return searcher

    @property
    def bm25(self) -> LuceneBM25:
        """The BM25 index of the loaded version, opened on first use (read-only; never built here).

        Raises:
            Bm25NotReadyError: missing or stale (the message names ``retriever index bm25 INDEX``).
            RetrieverError: no Java 21+ or pyserini; IndexDirError: an incomplete Lucene index.
        """
        if self._bm25 is None:
            from retriever.search.bm25_index import open_bm25

            opened = self.searcher.opened
            self._bm25 = open_bm25(opened.path, opened.manifest)
        return self._bm25

    @property
    def bm25_open(self) -> bool:
        """Whether the BM25 index has been opened (a bm25/hybrid search or :attr:`bm25` ran)."""
        return self._bm25 is not None

    def close(self) -> None:
        if self._bm25 is not None:
            self._bm25.close()
        self.searcher.close()

    # --- public -----------------------------------------------------------------------------
    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = DEFAULT_FUSION,
        alpha: float | None = None,
        depth: int | None = None,
        filters: Mapping[str, str] | None = None,
        **dense_options: Any,
    ) -> list[list[Hit]]:
        """Top-``k`` documents per query, best first, as :class:`Hit` (the shape of dense results).

        Args:
            mode: ``dense`` (the Searcher's results), ``bm25`` or ``hybrid``.
            fusion, alpha: how hybrid fuses (see :func:`fuse`).
            depth: documents taken from each list before fusion (default and minimum: ``max(k, 100)``).
            filters: metadata ``field=value`` filters, applied to dense and BM25 results.
            dense_options: ``nprobe``, ``ef_search``, ``batch_size`` for the dense search.

        Scores: cosine / inner product (dense), BM25 (bm25), fused score (hybrid). A hybrid hit's passage is
        its best dense passage when the dense list holds it, else the document text.

        Raises:
            RetrieverError: bad k/mode/fusion/alpha, a blank query, or BM25 cannot be built or loaded.
        """
        _check_k(k)
        check_options(mode, fusion, alpha)
        check_queries(queries)
        if mode == "dense":
            return self.searcher.search(queries, k, filters=filters, **dense_options)
        if mode == "bm25":
            return self._hydrate(self._sparse(queries, k, filters), [])
        fetch = _depth(k, depth)
        batch_size = dense_options.pop("batch_size", 64)
        vectors = self.searcher.encoder.encode_queries(list(queries), batch_size=batch_size)
        dense = self.searcher.search_vectors(vectors, fetch, filters=filters, **dense_options)
        sparse = self._sparse(queries, fetch, filters)
        fused, known = [], []
        for dense_hits, sparse_hits in zip(dense, sparse):
            as_hits = Hits([h.id for h in dense_hits], np.asarray([h.score for h in dense_hits], dtype=np.float32))
            fused.append(fuse(as_hits, sparse_hits, k, fusion=fusion, alpha=alpha))
            known.append({h.id: h for h in dense_hits})
        return self._hydrate(fused, known)

    def retrieve(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = DEFAULT_FUSION,
        alpha: float | None = None,
        depth: int | None = None,
        filters: Mapping[str, str] | None = None,
        **dense_options: Any,
    ) -> list[Hits]:
        """Ids and scores only (what evaluation needs); same arguments and ranking as :meth:`search`."""
        _check_k(k)
        check_options(mode, fusion, alpha)
        if mode == "dense":
            return self.searcher.retrieve(queries, k, filters=filters, **dense_options)
        if mode == "bm25":
            return self._sparse(queries, k, filters)
        dense, sparse = self.candidates(queries, _depth(k, depth), filters=filters, **dense_options)
        return [fuse(d, s, k, fusion=fusion, alpha=alpha) for d, s in zip(dense, sparse)]

    def candidates(
        self,
        queries: Sequence[str],
        depth: int = DEFAULT_DEPTH,
        *,
        filters: Mapping[str, str] | None = None,
        **dense_options: Any,
    ) -> tuple[list[Hits], list[Hits]]:
        """The dense and the BM25 top-``depth`` lists of each query, before fusion (for tuning a fusion:
        retrieve once, then call :func:`fuse` with each setting)."""
        _check_k(depth)
        dense = self.searcher.retrieve(queries, depth, filters=filters, **dense_options)
        return dense, self._sparse(queries, depth, filters)

    # --- internals ------------------------------------------------------------------------------
    def _sparse(self, queries: Sequence[str], k: int, filters: Mapping[str, str] | None) -> list[Hits]:
        """BM25 top-``k`` among live documents matching ``filters``."""
        bm25 = self.bm25
        docstore = self.searcher.opened.docstore
        exclude: Callable[[str], bool] | None
        if filters:
            allowed = {d for d in docstore.doc_ids(docstore.filter_pids(dict(filters))) if d is not None}
            if not allowed:
                return [Hits([], np.zeros(0, dtype=np.float32)) for _ in queries]
            exclude = lambda doc_id: doc_id not in allowed  # noqa: E731
        elif self._complete(bm25):
            exclude = None
        else:
            exclude = _Deleted(docstore.existing)
        return bm25.search(list(queries), k, exclude=exclude)

    def _complete(self, bm25: LuceneBM25) -> bool:
        """Whether every document BM25 indexed is still in the doc store (no deletions since its build).

        BM25 is current up to deletions (:func:`retriever.search.bm25_index.check_bm25`), so equal counts mean none.
        """
        if self._bm25_complete is None:
            self._bm25_complete = bm25.num_documents == self.searcher.opened.docstore.count_documents()
        return self._bm25_complete

    def _hydrate(self, ranked: list[Hits], known: list[dict[str, Hit]]) -> list[list[Hit]]:
        """Turn ids and scores into Hits: dense hits keep their passage, others read the doc store."""
        wanted = [d for i, hits in enumerate(ranked) for d in hits.ids if i >= len(known) or d not in known[i]]
        docs = self.searcher.opened.docstore.documents(list(dict.fromkeys(wanted)))
        out: list[list[Hit]] = []
        for i, hits in enumerate(ranked):
            row: list[Hit] = []
            for doc_id, score in zip(hits.ids, hits.scores.tolist()):
                dense = known[i].get(doc_id) if i < len(known) else None
                if dense is not None:
                    row.append(dense.rescored(float(score)))
                elif (doc := docs.get(doc_id)) is not None:
                    row.append(Hit(doc_id, score, doc.title, doc.text, doc.text, doc.metadata))
            out.append(row)
        return out


class _Deleted:
    """``exclude`` for BM25: True for ids the doc store no longer holds (memoised; one lookup per id)."""

    def __init__(self, existing: Callable[[Sequence[str]], set[str]]):
        self._existing = existing
        self._seen: dict[str, bool] = {}

    def __call__(self, doc_id: str) -> bool:
        deleted = self._seen.get(doc_id)
        if deleted is None:
            deleted = self._seen[doc_id] = doc_id not in self._existing([doc_id])
        return deleted


def _check_k(k: int) -> None:
    if k < 1:
        raise RetrieverError(f"k must be >= 1 (got {k})")


def _depth(k: int, depth: int | None) -> int:
    """Documents per list before fusion: ``depth`` (default :data:`DEFAULT_DEPTH`), at least ``k``."""
    if depth is not None and depth < 1:
        raise RetrieverError(f"depth must be >= 1 (got {depth})")
    return max(k, DEFAULT_DEPTH if depth is None else depth)
