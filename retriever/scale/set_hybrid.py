"""Dense, BM25 and hybrid search over an index set, answering as :class:`retriever.search.hybrid.HybridSearcher`.

Dense lists are merged exactly (:mod:`retriever.scale.merge`). BM25 runs in each shard's own Lucene index, so
its statistics (document frequencies, average length) are per shard: the merged BM25 list is the per-shard
lists merged by score, close to but not exactly what one index over all documents would rank (shards
receive documents by a hash of their id, so their statistics converge as they grow). Hybrid fuses the
merged dense top-``depth`` with the merged BM25 top-``depth`` once, at the set level, as one index would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import RetrieverError
from retriever.hits import Hit, Hits
from retriever.scale.merge import merge_hits, merge_ranked
from retriever.scale.set_searcher import SetSearcher
from retriever.search.hybrid import DEFAULT_DEPTH, DEFAULT_FUSION, HybridSearcher, check_options, fuse
from retriever.search.searcher import check_queries


class SetHybridSearcher:
    """A :class:`SetSearcher` plus each shard's BM25 index (opened on first use, or at load with ``bm25``)."""

    def __init__(self, searcher: SetSearcher):
        self.searcher = searcher
        self.shards = [HybridSearcher(shard) for shard in searcher.shards]

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", index_device: str | None = None,
             encoder: Any | None = None, bm25: bool = False, **options: Any) -> "SetHybridSearcher":
        """Open the set at ``path`` (see :meth:`SetSearcher.load`).

        Args:
            bm25: open every shard's BM25 index now (checked before the vectors load).
            options: more :meth:`SetSearcher.load` options (``query_backend``, ``announce``, ``mmap``, ...).

        Raises:
            IndexDirError: missing/corrupted set. Bm25NotReadyError: ``bm25`` and a shard has no current BM25
                index (the message names ``retriever set bm25 SET``).
        """
        if bm25:
            check_set_bm25(Path(path))
        searcher = cls(SetSearcher.load(path, device=device, index_device=index_device, encoder=encoder, **options))
        if bm25:
            try:
                for shard in searcher.shards:
                    shard.bm25
            except BaseException:
                searcher.close()
                raise
        return searcher

    @property
    def bm25_open(self) -> bool:
        return all(shard.bm25_open for shard in self.shards)

    @property
    def manifest(self):
        return self.searcher.manifest

    def close(self) -> None:
        for shard in self.shards:
            if shard.bm25_open:
                shard.bm25.close()
        self.searcher.close()

    def search(self, queries: Sequence[str], k: int = 10, *, mode: str = "hybrid", fusion: str = DEFAULT_FUSION,
               alpha: float | None = None, depth: int | None = None, filters: Mapping[str, str] | None = None,
               **dense_options: Any) -> list[list[Hit]]:
        """Top-``k`` documents per query as :meth:`HybridSearcher.search` answers them, over the whole set.

        Raises:
            RetrieverError: bad k/mode/fusion/alpha, a blank query, or a shard's BM25 missing for a BM25 mode.
        """
        _check(k, mode, fusion, alpha)
        check_queries(queries)
        if mode == "dense":
            return self.searcher.search(queries, k, filters=filters, **dense_options)
        if mode == "bm25":
            return self._sparse_hits(queries, k, filters)
        fetch = _depth(k, depth)
        vectors = self.searcher.encoder.encode_queries(list(queries), batch_size=dense_options.pop("batch_size", 64))
        dense = self.searcher.search_vectors(vectors, fetch, filters=filters, **dense_options)
        return fuse_hits(dense, self._sparse_hits(queries, fetch, filters), k, fusion=fusion, alpha=alpha)

    def retrieve(self, queries: Sequence[str], k: int = 10, *, mode: str = "hybrid", fusion: str = DEFAULT_FUSION,
                 alpha: float | None = None, depth: int | None = None, filters: Mapping[str, str] | None = None,
                 **dense_options: Any) -> list[Hits]:
        """Ids and scores only, ranked as :meth:`search` ranks them."""
        _check(k, mode, fusion, alpha)
        if mode == "dense":
            return self.searcher.retrieve(queries, k, filters=filters, **dense_options)
        if mode == "bm25":
            return self._sparse(queries, k, filters)
        dense, sparse = self.candidates(queries, _depth(k, depth), filters=filters, **dense_options)
        return [fuse(d, s, k, fusion=fusion, alpha=alpha) for d, s in zip(dense, sparse)]

    def candidates(self, queries: Sequence[str], depth: int = DEFAULT_DEPTH, *, filters: Mapping[str, str] | None = None,
                   **dense_options: Any) -> tuple[list[Hits], list[Hits]]:
        """The set's dense and BM25 top-``depth`` lists of each query, before fusion."""
        if depth < 1:
            raise RetrieverError(f"k must be >= 1 (got {depth})")
        return self.searcher.retrieve(queries, depth, filters=filters, **dense_options), self._sparse(queries, depth, filters)

    def _sparse(self, queries: Sequence[str], k: int, filters: Mapping[str, str] | None) -> list[Hits]:
        return merge_ranked([s.retrieve(queries, k, mode="bm25", filters=filters) for s in self.shards], k)

    def _sparse_hits(self, queries: Sequence[str], k: int, filters: Mapping[str, str] | None) -> list[list[Hit]]:
        return merge_hits([s.search(queries, k, mode="bm25", filters=filters) for s in self.shards], k)


def check_set_bm25(root: Path) -> None:
    """Raise Bm25NotReadyError (naming ``retriever set bm25 SET``) when a shard of the committed set version has
    no current BM25 index; no JVM starts."""
    from indexing.set_manifest import read_set_manifest
    from retriever.search.bm25_index import bm25_state

    manifest = read_set_manifest(root)
    for number in range(manifest.num_shards):
        state = bm25_state(manifest.shard_path(root, number), manifest.shard_manifest(number))
        if state != "current":
            raise shard_bm25_error(root, number, state)


def shard_bm25_error(root: Path, number: int, state: str) -> Exception:
    """The Bm25NotReadyError of shard ``number`` of the set at ``root``: it names ``retriever set bm25 SET`` (a
    shard's own ``retriever index bm25`` refuses to write a shard)."""
    from retriever.search.bm25_index import Bm25NotReadyError

    what = "has no BM25 index" if state == "missing" else "has an out-of-date BM25 index"
    return Bm25NotReadyError(f"shard {number} of the set {root} {what} (needed for bm25 and hybrid search); "
                             f"build it with `retriever set bm25 {root}`", state)  # type: ignore[arg-type]


def fuse_hits(dense: Sequence[Sequence[Hit]], sparse: Sequence[Sequence[Hit]], k: int, *, fusion: str = DEFAULT_FUSION,
              alpha: float | None = None) -> list[list[Hit]]:
    """Per query, the set's dense and BM25 lists (merged over shards, best first) fused into the top ``k``
    (:func:`retriever.search.hybrid.fuse`); a hit in the dense list keeps its best passage."""
    out = []
    for dense_hits, sparse_hits in zip(dense, sparse):
        known = {h.id: h for h in sparse_hits}
        known.update({h.id: h for h in dense_hits})
        fused = fuse(_as_hits(dense_hits), _as_hits(sparse_hits), k, fusion=fusion, alpha=alpha)  # type: ignore[arg-type]
        out.append([known[d].rescored(float(s)) for d, s in zip(fused.ids, fused.scores.tolist())])
    return out


def fuse_lists(dense: Sequence[Sequence[Sequence[Hit]]], sparse: Sequence[Sequence[Sequence[Hit]]], k: int,
               *, depth: int | None = None) -> list[list[Hit]]:
    """Hybrid over shards' answers: ``dense[s][q]``/``sparse[s][q]`` (each shard's top-``depth``) merged exactly,
    then fused with the default fusion into the top ``k`` (what the distributed service does)."""
    fetch = _depth(k, depth)
    return fuse_hits(merge_hits(dense, fetch), merge_hits(sparse, fetch), k)


def _as_hits(hits: Sequence[Hit]) -> Hits:
    return Hits([h.id for h in hits], np.asarray([h.score for h in hits], dtype=np.float32))


def _check(k: int, mode: str, fusion: str, alpha: float | None) -> None:
    if k < 1:
        raise RetrieverError(f"k must be >= 1 (got {k})")
    check_options(mode, fusion, alpha)


def _depth(k: int, depth: int | None) -> int:
    if depth is not None and depth < 1:
        raise RetrieverError(f"depth must be >= 1 (got {depth})")
    return max(k, DEFAULT_DEPTH if depth is None else depth)
