"""The FAISS wrapper: approximate indexes against exact search, removal, filters, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.errors import RetrieverError
from indexing.factory import choose_factory, training_sample_size
from indexing.faiss_index import Metric, VectorIndex


def _data(n: int = 4000, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, d))
    x = centers[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


@pytest.mark.parametrize("factory,nprobe,floor", [("IVF32,Flat", 8, 0.9), ("HNSW16", None, 0.9), ("IVF32,PQ8", 8, 0.4)])
def test_approximate_indexes_against_exact(factory, nprobe, floor):
    x = _data()
    ids = np.arange(len(x), dtype=np.int64) * 10 + 7
    exact = VectorIndex.create(x.shape[1], "Flat", Metric.IP)
    exact.add(ids, x)
    approx = VectorIndex.create(x.shape[1], factory, Metric.IP)
    approx.train(x)
    approx.add(ids, x)
    queries = x[:100] + 0.05
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10, nprobe=nprobe, ef_search=64)
    assert set(found.ravel()) <= set(ids) | {-1}
    assert _recall(found, truth) >= floor


def test_flat_is_exact_against_numpy():
    x = _data(500)
    index = VectorIndex.create(x.shape[1], "Flat", Metric.IP)
    index.add(np.arange(500), x)
    scores, found = index.search(x[:5], 3)
    brute = np.argsort(-(x[:5] @ x.T), axis=1)[:, :3]
    np.testing.assert_array_equal(found, brute)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "IVF32,Flat", "HNSW16"])
def test_one_query_at_a_time_equals_the_batch_and_keeps_the_thread_setting(factory):
    import threading

    import faiss

    x = _data(2000)
    index = VectorIndex.create(x.shape[1], factory, Metric.IP)
    index.train(x)
    index.add(np.arange(len(x)), x)
    queries = x[:20] + 0.05
    batch = index.search(queries, 10, nprobe=8)
    before = faiss.omp_get_max_threads()
    seen: list[int] = []
    original = index.index.search
    index.index.search = lambda *a, **kw: (seen.append(faiss.omp_get_max_threads()), original(*a, **kw))[1]
    one = [index.search(q[None], 10, nprobe=8) for q in queries]
    np.testing.assert_array_equal(np.vstack([ids for _, ids in one]), batch[1])
    np.testing.assert_allclose(np.vstack([s for s, _ in one]), batch[0], rtol=1e-5, atol=1e-6)
    assert seen == [1] * len(queries) and faiss.omp_get_max_threads() == before
    index.search(queries, 10, nprobe=8)
    assert seen[-1] == before  # a batch keeps the caller's threads
    other: list[int] = []  # the setting is per thread: another thread's searches keep theirs
    worker = threading.Thread(target=lambda: other.append(faiss.omp_get_max_threads()))
    worker.start()
    worker.join()
    assert other == [before]


@pytest.mark.parametrize("metric", [Metric.IP, Metric.L2])
@pytest.mark.parametrize("threads", [2, 3])
def test_one_query_on_a_large_flat_index_is_split_across_threads_and_equals_faiss(metric, threads):
    import faiss

    from indexing.split_scan import SPLIT_MIN_VECTORS, split_threads

    x = _data(SPLIT_MIN_VECTORS + 1001)
    index = VectorIndex.create(x.shape[1], "Flat", metric)
    index.add(np.arange(len(x), dtype=np.int64) * 5 + 3, x)  # ids are not positions: the IndexIDMap2 labels count
    queries = x[::4001] + 0.01
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        assert split_threads(index.index, 1, 10) == threads and split_threads(index.index, 2, 10) == 1
        scanned = [index.search(q[None], 10) for q in queries]
        assert faiss.omp_get_max_threads() == threads  # the caller's setting is left as it was
        expected = index.index.search(queries, 10)  # FAISS's own search, unsplit
        np.testing.assert_array_equal(np.vstack([ids for _, ids in scanned]), expected[1])
        np.testing.assert_allclose(np.vstack([s for s, _ in scanned]), expected[0], rtol=1e-5, atol=1e-5)
        # a deny list goes through FAISS's selector path, not the split scan, and still drops the denied id
        best = expected[1][0, 0]
        _, ids = index.search(queries[:1], 10, deny=np.array([best]))
        assert best not in ids[0] and ids[0, 0] == expected[1][0, 1]
    finally:
        faiss.omp_set_num_threads(before)


def test_only_large_flat_indexes_with_one_query_are_split():
    import faiss

    from indexing.split_scan import SPLIT_MIN_VECTORS, split_threads

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        small = VectorIndex.create(32, "Flat", Metric.IP)
        small.add(np.arange(100), _data(100))
        assert split_threads(small.index, 1, 10) == 1
        x = _data(SPLIT_MIN_VECTORS)
        hnsw = VectorIndex.create(x.shape[1], "HNSW8", Metric.IP)
        hnsw.add(np.arange(len(x)), x)
        assert split_threads(hnsw.index, 1, 10) == 1
        flat = VectorIndex.create(x.shape[1], "Flat", Metric.IP)
        flat.add(np.arange(len(x)), x)
        assert split_threads(flat.index, 1, SPLIT_MIN_VECTORS) == 1  # a slice would hold fewer than k
        faiss.omp_set_num_threads(1)
        assert split_threads(flat.index, 1, 10) == 1  # one thread allowed: nothing to split
    finally:
        faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16"])
def test_allow_filter_is_applied_before_top_k(factory):
    x = _data(2000)
    index = VectorIndex.create(x.shape[1], factory, Metric.IP)
    index.train(x)
    index.add(np.arange(2000), x)
    allowed = np.arange(0, 2000, 4)  # a quarter of the vectors
    _, found = index.search(x[:20], 10, allow=allowed, nprobe=16, ef_search=128)
    hits = found[found >= 0]
    assert len(hits) >= 150 and np.all(hits % 4 == 0)  # top-k filled from allowed ids only


def test_deny_and_remove():
    x = _data(300)
    index = VectorIndex.create(x.shape[1], "HNSW8", Metric.IP)
    index.add(np.arange(300), x)
    assert not index.supports_remove
    _, found = index.search(x[:3], 1, deny=np.array([0, 1, 2]))
    assert not set(found.ravel()) & {0, 1, 2}
    with pytest.raises(RetrieverError):
        index.remove(np.array([0]))
    flat = VectorIndex.create(x.shape[1], "Flat", Metric.IP)
    flat.add(np.arange(300), x)
    assert flat.remove(np.array([0, 1])) == 2 and flat.ntotal == 298


def test_save_load_mmap_roundtrip(tmp_path):
    x = _data(1000)
    index = VectorIndex.create(x.shape[1], "IVF8,Flat", Metric.L2)
    index.train(x)
    index.add(np.arange(1000), x)
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss", "IVF8,Flat", Metric.L2, mmap=True)
    a = index.search(x[:4], 5, nprobe=8)
    b = loaded.search(x[:4], 5, nprobe=8)
    np.testing.assert_array_equal(a[1], b[1])
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_factory_is_a_clear_error():
    with pytest.raises(RetrieverError, match="invalid FAISS factory string"):
        VectorIndex.create(8, "NotAnIndex", Metric.IP)


def test_auto_factory_choice():
    assert choose_factory(10_000, 384, memory_bytes=8 << 30) == "Flat"
    assert choose_factory(1_000_000, 384, memory_bytes=16 << 30).startswith("IVF4096,Flat")
    assert choose_factory(1_000_000, 384, memory_bytes=1 << 30) == "IVF4096,PQ48"
    assert choose_factory(50_000_000, 384, memory_bytes=1 << 40).endswith(",PQ48")
    assert training_sample_size("Flat") == 0 and training_sample_size("IVF1024,PQ48") == 65536
