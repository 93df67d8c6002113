"""Smoke tests of the benchmarks that measure memory, cold start, the service and index sets, at a reduced size.

As in tests/test_bench_smoke.py (whose helpers these use): each script runs as ``python -m benchmarks.NAME`` in a
subprocess, results go to a temp folder (``RETRIEVER_BENCH_RESULTS``), caches to another (``RETRIEVER_BENCH_CACHE``)
and data subsets are handed over as ``RETRIEVER_DATA``. Each test checks the figures its script promises in the JSON.

- build_memory: 30 SciFact documents, the tiny model (``--model``), both chunkings, one repeat;
- memory: 5,000 and 70,000 synthetic vectors (two 65,536-row blocks), ``IVF16,PQ8x4``;
- cold_start and serve: one small SciFact subset and one index cache for both (minilm, as the scripts fix it);
  serve's load comes from wrk when installed, else from the Python generator; its breakdown always uses the latter;
- set_scaling: ``--quick`` (3,000 vectors a dimension, IVF64, PQ without polysemous training for ``qps``; a 2-shard
  set of 40 documents on a Ray cluster of its own for ``fanout``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.common import DATA
from tests.test_bench_smoke import bench, results_of, subset

pytestmark = pytest.mark.slow


def scifact_or_skip() -> Path:
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact under {DATA}")
    return DATA / "scifact"


@pytest.fixture(scope="module")
def small_scifact(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, benchmark cache) shared by cold_start and serve: 20 queries a split, the index built once."""
    data = tmp_path_factory.mktemp("data")
    subset("scifact", data, queries=20, docs=60)
    return data, tmp_path_factory.mktemp("bench-cache")


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path / "results"


def test_build_memory(out, tiny_model):
    corpus = scifact_or_skip() / "corpus.jsonl"
    bench("build_memory", "--corpus", corpus, "--limit", "30", "--model", tiny_model, "--name", "build_memory-smoke",
          results=out)
    result = results_of(out, "build_memory-smoke")
    assert result["limit"] == 30 and result["precision"] == "fp32" and result["repeats"] == 1
    rows = {(r["chunking"], r["run"]): r for r in result["runs"]}
    assert set(rows) == {(c, run) for c in ("0", "default") for run in ("before", "after", "floor", "floor, trimmed")}
    assert {r["passages"] for (c, _), r in rows.items() if c == "0"} == {30}
    assert len({r["passages"] for (c, _), r in rows.items() if c == "default"}) == 1
    assert rows["default", "after"]["passages"] > 30  # the tiny model's 64-token windows split abstracts
    for (chunk, run), row in rows.items():
        assert 50 < row["peak_rss_mib"] < 8192 and row["seconds"] >= 0 and len(row["all"]) == 1, (chunk, run)
        assert "encode" in row["phases"] and max(row["phases"].values()) <= row["peak_rss_mib"] + 1, (chunk, run)
    for chunk in ("0", "default"):  # the memory fixes change nothing in the index
        assert rows[chunk, "before"]["index_digest"] == rows[chunk, "after"]["index_digest"]


def test_memory(tmp_path, out):
    sizes = [5000, 70000]
    bench("memory", "--sizes", ",".join(map(str, sizes)), "--factory", "IVF16,PQ8x4", results=out,
          cache=tmp_path / "cache")
    result = results_of(out, "memory")
    assert result["factory"] == "IVF16,PQ8x4" and [r["vectors"] for r in result["runs"]] == sizes
    for row in result["runs"]:
        assert row["factory"] == "IVF16,PQ8x4" and row["seconds"] >= 0 and row["docstore_bytes"] > 0
        assert row["vectors"] * 4 <= row["index_bytes"] < row["vectors"] * 384 * 4 // 8  # 4-byte codes, not vectors
        assert 20 * 2**20 < row["peak_rss_bytes"] < 4 * 2**30
    small, large = result["runs"]
    assert large["index_bytes"] > small["index_bytes"] and large["docstore_bytes"] > small["docstore_bytes"]


def test_cold_start(small_scifact, out):
    data, cache = small_scifact
    bench("cold_start", "--repeats", "1", results=out, cache=cache, data=data)
    result = results_of(out, "cold_start")
    assert result["repeats"] == 1 and len(result["onnx_runs_s"]) == len(result["torch_runs_s"]) == 1
    assert result["onnx_median_s"] > 0 and result["torch_median_s"] > 0
    assert result["speedup"] == pytest.approx(result["torch_median_s"] / result["onnx_median_s"], abs=0.02)
    assert result["cli_startup_imports_torch"] is False  # the ONNX path's whole point
    assert result["queries"] == 20 and result["top10_identical"] >= 18  # the ONNX graph encodes as torch does
    assert result["top10_identical_share"] == round(result["top10_identical"] / 20, 4)
    assert 0 <= result["ndcg10_onnx"] <= 1 and 0 <= result["ndcg10_torch"] <= 1
    assert result["ndcg10_difference"] == pytest.approx(abs(result["ndcg10_onnx"] - result["ndcg10_torch"]), abs=2e-4)
    assert result["ndcg10_difference"] < 0.05


def test_serve(small_scifact, out):
    data, cache = small_scifact
    bench("serve", "--duration", "4", "--clients", "4", "--ceiling-seconds", "2", "--breakdown", "2",
          results=out, cache=cache, data=data)
    result = results_of(out, "serve")
    assert result["load_generator"] == ("wrk" if shutil.which("wrk") else "python")
    documents = sum(1 for _ in open(data / "scifact" / "corpus.jsonl", encoding="utf-8"))
    assert result["documents"] == documents and result["clients"] == 4 and result["k"] == 10
    a, b, service = result["ceiling_a_in_process"], result["ceiling_b_noop"], result["service"]
    assert len(a["runs"]) == len(b["runs"]) == 2 and a["throughput_qps"] > 0 and b["throughput_rps"] > 0
    assert service["requests"] > 0 and service["errors"] == 0 and service["throughput_rps"] > 0
    assert 0 < service["p50_ms"] <= service["p99_ms"] and service["mean_batch"] >= 1
    ratio = service["throughput_rps"] / min(a["throughput_qps"], b["throughput_rps"])
    assert result["ratio_to_lower_ceiling"] == pytest.approx(ratio, rel=0.02)
    assert result["breakdown"]["requests"] > 0 and {"encode", "search", "client"} <= set(result["breakdown"]["spans_ms"])
    assert len(result["bad_requests"]) == 6 and all(400 <= x["status"] < 500 and x["error"] for x in result["bad_requests"])
    acceptance = result["acceptance"]
    assert acceptance["zero_errors"] and acceptance["bad_requests_all_4xx_with_message"] and acceptance["alive_after_bad_requests"]


def test_set_scaling(out):
    scifact_or_skip()
    pytest.importorskip("ray.serve")
    from benchmarks.serve_load import free_port
    from benchmarks.set_scaling import factories

    bench("set_scaling", "--quick", "--port", free_port(), results=out)
    result = json.loads((out / "set_scaling.json").read_text(encoding="utf-8"))
    assert {"machine", "written"} <= set(result)
    assert result["faiss_threads"] == 1 and result["cpu_cores"] == os.cpu_count()
    expected = [(d, f) for d in (384, 768) for f in factories(d, 64, polysemous=False)]
    assert sorted((r["dim"], r["factory"]) for r in result["qps"]) == sorted(expected) and "IVF64,PQ96np" in expected[-1]
    assert all(r["vectors"] == 3000 and r["qps"] > 0 for r in result["qps"])
    fan = result["fanout"]
    assert fan["docs"] == 40 and fan["shards"] == 2
    for side in ("in_process_ms", "ray_http_ms"):
        assert 0 < fan[side]["p50"] <= fan[side]["p90"], side
    assert fan["added_p50_ms"] == pytest.approx(fan["ray_http_ms"]["p50"] - fan["in_process_ms"]["p50"], abs=0.11)
