"""FAISS wrapper: one index described by a factory string, with int64 ids and filtered search.

Ids here are int64 passage numbers; the string ids live in the doc store (``indexing.docstore``).
GPU placement is a transform kept in ``indexing.gpu``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import faiss
import numpy as np

from indexing.errors import IndexDirError, RetrieverError
from indexing.split_scan import split_search, split_threads

log = logging.getLogger(__name__)


@contextmanager
def threads_for(queries: int) -> Iterator[None]:
    """One OpenMP thread for a one-query search in this thread, the caller's setting otherwise (restored after).

    FAISS spreads a search over its queries, so one query runs on one thread anyway, and a second OpenMP thread only
    costs: a one-query exact search of 100,000 x 384 vectors ran at 65 queries/s with 2 threads and 126 with one
    (IVF 4,528 against 4,735; HNSW equal). OpenMP's thread count is per calling thread, so concurrent searches in
    other threads keep theirs.
    """
    before = faiss.omp_get_max_threads()
    if queries != 1 or before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Metric(str, Enum):
    """Similarity of the index: inner product (cosine on normalized vectors) or L2 distance."""

    IP = "ip"
    L2 = "l2"

    @property
    def faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self is Metric.IP else faiss.METRIC_L2


def _wants_id_map(index: faiss.Index) -> bool:
    """IVF indexes store ids themselves; everything else (Flat, HNSW, PQ, ...) needs IndexIDMap2."""
    return faiss.try_extract_index_ivf(index) is None


HNSW_EF_CONSTRUCTION = 200
"""Beam width while building HNSW graphs (hnswlib's default; FAISS's own is 40)."""


def _is_hnsw(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return isinstance(inner, (faiss.IndexHNSW,)) or "HNSW" in type(inner).__name__


def parts(index: faiss.Index) -> list[faiss.Index]:
    """The shards of a ``faiss.IndexShards`` (downcast), or ``[index]`` for any other index."""
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]


class VectorIndex:
    """One FAISS index with int64 ids.

    Vectors are ``(n, dim)`` float32; scores are higher-is-better for IP and lower-is-better
    distances for L2 (the Searcher turns L2 distances into negated scores).
    """

    def __init__(self, index: faiss.Index, factory: str, metric: Metric):
        self.index = index
        self.factory = factory
        self.metric = metric

    # --- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, factory: str, metric: Metric) -> "VectorIndex":
        """Create an empty index from a FAISS factory string (e.g. ``"Flat"``, ``"IVF1024,PQ64"``, ``"HNSW32"``).

        Raises:
            RetrieverError: the factory string is not understood by FAISS.
        """
        try:
            inner = faiss.index_factory(dim, factory, metric.faiss_metric)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else str(exc)
            raise RetrieverError(f"invalid FAISS factory string {factory!r}: {first}") from None
        if isinstance(inner, faiss.IndexHNSW):  # FAISS's default (40) builds a graph that needs a ~4x wider search
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION  # beam for the recall hnswlib's graphs reach
        index = faiss.IndexIDMap2(inner) if _wants_id_map(inner) else inner
        return cls(index, factory, metric)

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def supports_remove(self) -> bool:
        """HNSW graphs cannot drop vectors; deletions there are honoured at search time."""
        return not _is_hnsw(parts(self.index)[0])

    def train(self, sample: np.ndarray) -> None:
        """Train quantizers on ``sample`` ``(n, dim)`` float32 (no-op for indexes that need no training)."""
        if not self.index.is_trained:
            log.info("training %s on %d vectors", self.factory, len(sample))
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` ``(n, dim)`` float32 under int64 ``ids`` ``(n,)``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise RetrieverError(f"vectors have shape {vectors.shape}, the index expects (n, {self.dim})")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; returns how many were removed. Raises RetrieverError for HNSW."""
        if not self.supports_remove:
            raise RetrieverError(f"{self.factory} cannot remove vectors; deletions are applied at search time")
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` as ``(n, dim)`` float32 (approximate for compressed indexes)."""
        if faiss.try_extract_index_ivf(self.index) is not None:
            ivf = faiss.extract_index_ivf(self.index)
            if ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # ids are not sequential
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)), dtype=np.float32)

    # --- search ---------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        allow: np.ndarray | None = None,
        deny: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search ``queries`` ``(q, dim)`` float32 for the ``k`` nearest vectors.

        Args:
            nprobe: IVF lists to visit (None: the index's own setting).
            ef_search: HNSW beam width (None: the index's own setting).
            allow: if given, only these int64 ids may be returned (filter applied before top-k).
            deny: ids never returned (deleted vectors of indexes that cannot remove).

        Returns:
            ``(scores, ids)``, each ``(q, k)``; missing results have id -1. One query on a large Flat index with no
            ``allow``/``deny`` is scanned by all the caller's OpenMP threads (:mod:`indexing.split_scan`).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        selector = None
        if allow is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allow, dtype=np.int64))
        if deny is not None and len(deny):
            not_denied = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(deny, dtype=np.int64)))
            selector = not_denied if selector is None else faiss.IDSelectorAnd(selector, not_denied)
        params = self._search_params(selector, nprobe, ef_search, k)
        slices = split_threads(self.index, len(queries), k) if params is None else 1  # before threads_for sets 1
        with threads_for(len(queries)):
            if slices > 1:
                return split_search(self.index, queries, k, slices)
            if params is None:
                return self.index.search(queries, k)
            # keep the selector objects alive while FAISS uses them
            params._keep = selector  # type: ignore[attr-defined]
            return self.index.search(queries, k, params=params)

    def _search_params(self, selector, nprobe: int | None, ef_search: int | None, k: int):
        first = parts(self.index)[0]  # the shards of a sharded index share one type
        inner = faiss.downcast_index(first.index) if isinstance(first, faiss.IndexIDMap) else first
        if faiss.try_extract_index_ivf(first) is not None:
            if selector is None and nprobe is None:
                return None
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe or faiss.extract_index_ivf(first).nprobe
        elif isinstance(inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            # the beam must be at least k wide, or HNSW returns fewer than k results
            params.efSearch = max(ef_search or inner.hnsw.efSearch, k)
        else:
            if selector is None:
                return None
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def set_nprobe(self, nprobe: int) -> None:
        """Default number of IVF lists visited per query, on every shard (no-op for non-IVF indexes)."""
        for part in parts(self.index):
            ivf = faiss.try_extract_index_ivf(part)
            if ivf is not None:
                ivf.nprobe = nprobe

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the index to ``path`` atomically (temp file + fsync + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(faiss.index_gpu_to_cpu(self.index) if _on_gpu(self.index) else self.index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, factory: str, metric: Metric, *, mmap: bool = False, on_disk: bool = False) -> "VectorIndex":
        """Read an index written by :meth:`save`. ``mmap`` maps IVF inverted lists instead of reading them.

        ``on_disk``: the index keeps its inverted lists in a ``*.ivfdata`` file (see ``indexing.layout``),
        looked up beside ``path`` and memory-mapped read-only (``mmap`` is then implied: FAISS's
        IO_FLAG_MMAP itself crashes on such an index).

        Raises:
            IndexDirError: the file is missing, a symbolic link, unreadable, or its metric is not ``metric``.
        """
        if path.is_symlink():
            raise IndexDirError(f"{path}: index file is a symbolic link; index files must be regular files")
        if not path.is_file():
            raise IndexDirError(f"{path}: index file is missing")
        if on_disk:
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
        else:
            flags = (faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY) if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines() or ["unknown error"]
            raise IndexDirError(f"{path}: cannot read FAISS index ({lines[-1].strip()})") from None
        if index.metric_type != metric.faiss_metric:
            raise IndexDirError(f"{path}: the FAISS index does not use the {metric.value} metric the manifest records")
        return cls(index, factory, metric)


def _on_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__
