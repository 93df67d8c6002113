"""Scale-out: sliced builds + merge, sharded search, on-disk IVF lists, and pool-encoded (planned) builds.

Ray itself is exercised in tests/test_ray.py; here the planned-build path runs with an in-process pool.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from indexing.builder import BuildConfig, build_index, shard_inputs
from indexing.from_vectors import build_from_vectors
from indexing.manifest import read_manifest
from indexing.errors import IndexDirError, RetrieverError
from indexing.index_dir import open_index
from indexing.layout import balanced_partition, is_on_disk, is_sharded
from indexing.merge import merge_indexes
from indexing.readers import read_corpus
from indexing.shards import write_shard
from retriever.search.searcher import Searcher

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def encoder(tiny_model):
    from retriever.encoders.base import load_encoder

    return load_encoder(str(tiny_model), device="cpu", precision="fp32")  # indexes compared for equality


def config(encoder, **changes) -> BuildConfig:
    base = dict(corpus=("c",), factory="Flat", chunk_tokens=16, chunk_overlap=4, docs_per_shard=16, encoder=encoder.describe())
    return BuildConfig(**{**base, **changes})


def vectors_by_passage(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """(document id, passage index) -> stored vector, over every live passage of an index."""
    opened = open_index(path)
    try:
        rows = opened.docstore.passage_rows(-1, 10**9)
        vectors = opened.vectors.reconstruct(np.array([r[0] for r in rows], dtype=np.int64))
        return {(doc, idx): vec for (_, doc, idx, _, _), vec in zip(rows, vectors)}
    finally:
        opened.close()


class InProcessPool:
    """A ShardPool encoding in this process; ``fail_after`` raises after that many shards (a killed pool)."""

    def __init__(self, encoder, fail_after: int | None = None):
        self.encoder, self.fail_after, self.asked = encoder, fail_after, []

    def encode_shards(self, work, numbers, done):
        self.asked.append(list(numbers))
        for count, number in enumerate(numbers):
            if self.fail_after is not None and count == self.fail_after:
                raise RuntimeError("worker lost")
            pids, texts = shard_inputs(work / "docstore.sqlite", number)
            write_shard(work / "shards", number, pids, self.encoder.encode_documents(texts))
            done(number)


def test_pool_build_equals_local_and_resumes_only_missing_shards(tmp_path, encoder, small_corpus):
    docs = lambda: read_corpus([small_corpus])  # noqa: E731
    local = build_index(tmp_path / "local", docs, encoder, config(encoder))
    flaky = InProcessPool(encoder, fail_after=2)
    with pytest.raises(RuntimeError):
        build_index(tmp_path / "pool", docs, encoder, config(encoder, engine="test"), pool=flaky)
    assert flaky.asked == [[0, 1, 2, 3]]
    resumed = InProcessPool(encoder)
    seen = []
    pooled = build_index(tmp_path / "pool", docs, encoder, config(encoder, engine="test"), pool=resumed, resume=True,
                         progress=lambda d, p: seen.append(d))
    assert resumed.asked == [[2, 3]]  # shards 0 and 1 were finished: not encoded again
    assert seen[-1] == 60 and pooled.counts == local.counts
    a, b = vectors_by_passage(tmp_path / "local"), vectors_by_passage(tmp_path / "pool")
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5
    with pytest.raises(RetrieverError, match="shard pool"):
        build_index(tmp_path / "x", docs, encoder, config(encoder, engine="test"))


def test_sliced_builds_merge_into_the_full_index(tmp_path, encoder, small_corpus):
    docs = lambda: read_corpus([small_corpus])  # noqa: E731
    build_index(tmp_path / "full", docs, encoder, config(encoder))
    for i in range(3):
        manifest = build_index(tmp_path / f"part{i}", docs, encoder, config(encoder, num_shards=3, shard_id=i))
        assert manifest.counts["documents"] == 20
    part0 = open_index(tmp_path / "part0")
    assert sorted(d.id for d in part0.docstore.iter_documents()) == sorted(f"d{i}" for i in range(0, 60, 3))
    part0.close()

    result = run("index", "merge", *(tmp_path / f"part{i}" for i in range(3)), "--out", tmp_path / "merged", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["documents"] == 60
    full, merged = vectors_by_passage(tmp_path / "full"), vectors_by_passage(tmp_path / "merged")
    assert full.keys() == merged.keys()
    assert max(float(np.abs(full[k] - merged[k]).max()) for k in full) <= 1e-6
    one, other = open_index(tmp_path / "full"), open_index(tmp_path / "merged")
    assert one.docstore.documents(["d7"]) == other.docstore.documents(["d7"])
    one.close(), other.close()
    queries = encoder.encode_queries(["dense retrieval", "token window", "vector index search"])
    want = Searcher.load(tmp_path / "full", device="cpu").retrieve_vectors(queries, 10)
    got = Searcher.load(tmp_path / "merged", device="cpu").retrieve_vectors(queries, 10)
    # the toy corpus repeats bodies (tied scores, ordered by pid, which differs): compare scores and score->ids
    np.testing.assert_allclose(np.stack([h.scores for h in want]), np.stack([h.scores for h in got]), rtol=1e-6)
    for w, g in zip(want, got):
        assert {(round(float(s), 5), i) for s, i in zip(w.scores, w.ids) if s > w.scores[-1] + 1e-5} == \
            {(round(float(s), 5), i) for s, i in zip(g.scores, g.ids) if s > g.scores[-1] + 1e-5}


def test_merge_refuses_mismatched_indexes(tmp_path, encoder, small_corpus):
    docs = lambda: read_corpus([small_corpus])  # noqa: E731
    build_index(tmp_path / "a", docs, encoder, config(encoder, num_shards=2, shard_id=0))
    build_index(tmp_path / "l2", docs, encoder, config(encoder, num_shards=2, shard_id=1, metric="l2"))
    build_index(tmp_path / "again", docs, encoder, config(encoder, num_shards=2, shard_id=0))
    vecs = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    build_from_vectors(tmp_path / "d8", vecs, (f"v{i}" for i in range(50)), BuildConfig(corpus=("v",), factory="Flat"))
    cases = [("l2", "metric"), ("d8", "differs from"), ("again", "duplicate id")]
    for name, fragment in cases:
        result = run("index", "merge", tmp_path / "a", tmp_path / name, "--out", tmp_path / f"m-{name}")
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "error:" in result.output
        assert fragment in " ".join(result.output.split()) and len(result.output.strip().splitlines()) <= 2


def test_sharded_exact_search_equals_one_exact_index(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3000, 24)).astype(np.float32)
    queries = rng.normal(size=(40, 24)).astype(np.float32)
    ids = [f"v{i}" for i in range(3000)]
    for name, shards in (("one", 1), ("sharded", 4)):
        build_from_vectors(tmp_path / name, vecs, iter(ids), BuildConfig(corpus=("v",), factory="Flat", docs_per_shard=500, index_shards=shards))
    sharded = Searcher.load(tmp_path / "sharded", device="cpu")
    assert is_sharded(sharded.manifest) and len([r for r in sharded.manifest.files if r.startswith("shard.")]) == 4
    want = Searcher.load(tmp_path / "one", device="cpu").retrieve_vectors(queries, 10)
    got = sharded.retrieve_vectors(queries, 10)
    assert [h.ids for h in want] == [h.ids for h in got]
    np.testing.assert_allclose(np.stack([h.scores for h in want]), np.stack([h.scores for h in got]), rtol=1e-6)
    # merge --sharded: one index shard per input, same results again
    for i, part in enumerate((slice(0, 1000), slice(1000, 3000))):
        build_from_vectors(tmp_path / f"p{i}", vecs[part], iter(ids[part]), BuildConfig(corpus=("v",), factory="Flat"))
    merged = merge_indexes([tmp_path / "p0", tmp_path / "p1"], tmp_path / "ms", sharded=True)
    assert sorted(r for r in merged.files if r.startswith("shard.")) == ["shard.0", "shard.1"]
    got = Searcher.load(tmp_path / "ms", device="cpu").retrieve_vectors(queries, 10)
    assert [h.ids for h in want] == [h.ids for h in got]
    with pytest.raises(IndexDirError, match="sharded index cannot be updated"):
        run_delete = __import__("indexing.updates", fromlist=["delete_documents"]).delete_documents
        run_delete(tmp_path / "sharded", ["v1"])


def test_sharded_ivf_uses_one_quantizer_and_nprobe(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(4000, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(4000)]
    for name, shards in (("one", 1), ("sharded", 3)):
        build_from_vectors(tmp_path / name, vecs, iter(ids), BuildConfig(corpus=("v",), factory="IVF32,Flat", docs_per_shard=700, nprobe=4, index_shards=shards))
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    for nprobe in (None, 32):
        want = Searcher.load(tmp_path / "one", device="cpu").retrieve_vectors(queries, 10, nprobe=nprobe)
        got = Searcher.load(tmp_path / "sharded", device="cpu").retrieve_vectors(queries, 10, nprobe=nprobe)
        assert [h.ids for h in want] == [h.ids for h in got]


def test_on_disk_ivf_lists_search_like_in_memory_and_move_with_the_index(tmp_path, monkeypatch, capfd):
    import indexing.layout

    monkeypatch.setattr(indexing.layout, "BLOCK_BYTES", 64 * 16 * 4 * 300)  # several blocks merged on disk
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(5000, 64)).astype(np.float32)
    ids = [f"v{i}" for i in range(5000)]
    for name, on_disk in (("ram", False), ("disk", True)):
        build_from_vectors(tmp_path / name, vecs, iter(ids), BuildConfig(corpus=("v",), factory="IVF16,Flat", docs_per_shard=1000, on_disk=on_disk))
    files = sorted(p.name for p in (tmp_path / "disk").iterdir() if not p.name.startswith("."))
    tag = read_manifest(tmp_path / "disk").files["index"].removeprefix("index.").removesuffix(".faiss")
    assert files == [f"docstore.{tag}.sqlite", f"index.{tag}.faiss", f"index.{tag}.ivfdata", "manifest.json"]
    assert (tmp_path / "disk" / f"index.{tag}.faiss").stat().st_size < 100_000  # the lists are in the .ivfdata file
    shutil.move(tmp_path / "disk", tmp_path / "moved")
    searcher = Searcher.load(tmp_path / "moved", device="cpu")
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(searcher.opened.vectors.index).invlists)
    assert is_on_disk(searcher.manifest) and isinstance(invlists, faiss.OnDiskInvertedLists)
    queries = rng.normal(size=(50, 64)).astype(np.float32)
    want = Searcher.load(tmp_path / "ram", device="cpu").retrieve_vectors(queries, 10, nprobe=4)
    got = searcher.retrieve_vectors(queries, 10, nprobe=4)
    assert [h.ids for h in want] == [h.ids for h in got]
    capfd.readouterr()
    Searcher.load(tmp_path / "moved", device="cpu")
    assert capfd.readouterr().out == ""  # FAISS's printf goes to stderr, stdout stays clean for --json
    result = run("index", "verify", tmp_path / "moved")
    assert result.exit_code == 0, result.output
    with pytest.raises(RetrieverError, match="needs an IVF index"):
        build_from_vectors(tmp_path / "flat", vecs, iter(ids), BuildConfig(corpus=("v",), factory="Flat", on_disk=True))


def test_balanced_partition():
    assert balanced_partition([10, 10, 10, 10], 2) == [0, 2]
    assert balanced_partition([10, 10, 10, 10], 4) == [0, 1, 2, 3]
    assert balanced_partition([100, 1, 1, 1], 2) == [0, 1]
    starts = balanced_partition([5] * 10, 3)
    assert len(starts) == 3 and starts[0] == 0 and starts == sorted(set(starts))
    with pytest.raises(RetrieverError):
        balanced_partition([5, 5], 3)


def test_cli_build_slice_options_are_checked(tmp_path, small_corpus, tiny_model):
    result = run("index", "build", small_corpus, "--out", tmp_path / "x", "--model", tiny_model, "--num-shards", "2", "--shard-id", "2", "--device", "cpu")
    assert result.exit_code == 2 and "--shard-id 2" in result.output
    result = run("index", "build", small_corpus, "--out", tmp_path / "x", "--model", tiny_model, "--engine", "spark", "--device", "cpu")
    assert result.exit_code == 2 and "--engine" in result.output
    result = run("index", "build", small_corpus, "--out", tmp_path / "s", "--model", tiny_model, "--num-shards", "2", "--shard-id", "1",
                 "--index-shards", "2", "--shard-docs", "8", "--chunk-tokens", "0", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["counts"]["documents"] == 30 and manifest["build"]["shard_id"] == 1
    assert {"shard.0", "shard.1"} <= set(manifest["files"])


@pytest.mark.gpu
def test_sharded_index_is_spread_over_the_gpus_and_matches_the_cpu(tmp_path):
    from indexing.faiss_index import parts
    from indexing.gpu import faiss_gpu_count

    if faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support here (faiss-cpu)")
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(6000, 32)).astype(np.float32)
    build_from_vectors(tmp_path / "s", vecs, (f"v{i}" for i in range(6000)),
                       BuildConfig(corpus=("v",), factory="Flat", docs_per_shard=1000, index_shards=3))
    queries = rng.normal(size=(50, 32)).astype(np.float32)
    cpu = Searcher.load(tmp_path / "s", device="cpu").retrieve_vectors(queries, 10)
    gpu = Searcher.load(tmp_path / "s", device="cpu", index_device="cuda:0")
    shards = parts(gpu.opened.vectors.index)
    assert len(shards) == 3 and all("Gpu" in type(s).__name__ for s in shards)
    got = gpu.retrieve_vectors(queries, 10)
    assert np.mean([a == b for w, g in zip(cpu, got) for a, b in zip(w.ids, g.ids)]) > 0.98
