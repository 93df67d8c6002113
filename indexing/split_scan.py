"""One query's exact (Flat) search split across the OpenMP threads the caller allows.

FAISS parallelizes an exact search over its queries, so a single query scans every vector on one core while the
others idle. Here the stored vectors are cut into as many contiguous slices as the caller's OpenMP thread count,
each slice is scanned by :func:`faiss.knn` (FAISS's own exhaustive kernel, which releases the GIL) in its own
thread, and :func:`faiss.merge_knn_results` merges the slices' top-k. On 100,000 x 384 vectors with 2 threads a
one-query search ran at ~180 queries/s against ~125 for one thread (and ~65 for FAISS with two threads idling one);
results equal FAISS's own search (same kernel, ties aside).

Written by hand: FAISS splits one query across threads only for IVF lists (``parallel_mode``), not for Flat, and
``IndexShards`` would need the vectors copied into separate indexes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

SPLIT_MIN_VECTORS = 20_000
"""Below this many vectors a one-query scan takes well under a millisecond and threads would only add overhead."""

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, each limited to one OpenMP thread (OpenMP's count is per thread)."""
    with _pool_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="retriever-scan",
                                                 initializer=faiss.omp_set_num_threads, initargs=(1,))
        return _pools[workers]


def flat_parts(index: faiss.Index) -> tuple[faiss.IndexFlat, faiss.Index | None] | None:
    """``(flat, id_map_owner)`` when ``index`` is a CPU ``IndexFlat`` (IP or L2), bare or inside ``IndexIDMap2``;
    None for any other index (IVF, HNSW, compressed, sharded, on a GPU)."""
    owner = index if isinstance(index, faiss.IndexIDMap) else None
    inner = faiss.downcast_index(index.index) if owner is not None else index
    if type(inner) not in (faiss.IndexFlatIP, faiss.IndexFlatL2, faiss.IndexFlat):
        return None
    if inner.metric_type not in (faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2):
        return None
    return inner, owner


def split_threads(index: faiss.Index, queries: int, k: int) -> int:
    """How many slices a search of ``queries`` query vectors for ``k`` results should scan ``index`` in: the caller's
    OpenMP thread count for one query on a large Flat index with at least ``k`` vectors per slice, else 1."""
    threads = faiss.omp_get_max_threads()
    if queries != 1 or threads < 2 or index.ntotal < SPLIT_MIN_VECTORS or flat_parts(index) is None:
        return 1
    return max(1, min(threads, index.ntotal // max(k, 1)))


def split_search(index: faiss.Index, query: np.ndarray, k: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's ``index.search(query, k)`` for one query ``(1, d)`` float32, the scan cut into ``slices`` threads:
    the calling thread scans the first slice (on its own OpenMP setting, which
    :func:`indexing.faiss_index.threads_for` holds at one for a single query), pooled threads the others.

    Returns:
        ``(scores, ids)``, each ``(1, k)``: inner products best first, or squared L2 distances nearest first; ids
        are the index's own (the ``IndexIDMap2`` labels where there is one).

    Raises:
        ValueError: ``index`` is not a Flat index :func:`flat_parts` accepts, or a slice would hold fewer than k.
    """
    found = flat_parts(index)
    if found is None or index.ntotal < slices * k:
        raise ValueError("split_search needs a Flat index with at least k vectors per slice")
    flat, owner = found
    total, dim = flat.ntotal, flat.d
    # a view of FAISS's own storage (no copy); valid while the index is not modified, which readers never do
    stored = faiss.rev_swig_ptr(flat.get_xb(), total * dim).reshape(total, dim)
    bounds = np.linspace(0, total, slices + 1).astype(np.int64)
    metric = flat.metric_type

    def scan(part: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = faiss.knn(query, stored[bounds[part]:bounds[part + 1]], k, metric=metric)
        return scores, rows + bounds[part]

    later = [_pool(slices - 1).submit(scan, part) for part in range(1, slices)]
    done = [scan(0)] + [future.result() for future in later]
    scores, rows = faiss.merge_knn_results(np.stack([s for s, _ in done]), np.stack([r for _, r in done]),
                                           keep_max=metric == faiss.METRIC_INNER_PRODUCT)
    if owner is None:
        return scores, rows
    labels = faiss.rev_swig_ptr(owner.id_map.data(), total)
    return scores, np.where(rows >= 0, labels[np.maximum(rows, 0)], -1)
