"""Smoke test of benchmarks/precision.py: ``--quick`` on a tiny SciFact subset, every figure in the JSON.

Slow: it builds small indexes with minilm and the multilingual preset several times and trains minilm twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.common import DATA, REPO

pytestmark = pytest.mark.slow


def test_precision_quick(tmp_path):
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact under {DATA}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.precision", "--quick", "--docs", "10", "--rounds", "1",
                           "--steps", "3", "--work", str(tmp_path / "work"), "--results", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "precision-quick.json").read_text())
    assert (tmp_path / "precision-quick.md").read_text().startswith("# Encoding and training precision")
    from retriever.devices import native_bf16_cpu

    for preset in ("text", "crosslingual"):
        row = results[preset]
        assert row["auto_precision"] == ("bf16" if native_bf16_cpu() else "fp32")
        assert row["passages"] > 0 and row["raw_fp32_passages_per_s"] > 0 and row["ratio_auto_build_vs_raw_fp32"] > 0
        assert row["cosine_auto_vs_fp32"]["min"] > 0.99
    assert 0 < results["text"]["ndcg@10"]["auto"] <= 1 and 0 < results["text"]["ndcg@10"]["fp32"] <= 1
    training = results["training"]
    for precision in ("bf16", "fp32"):
        assert training[precision]["steps"] == 3 and training[precision]["card_training"] == {"precision": precision}
        assert 0 < training[precision]["ndcg@10"] <= 1
    assert training["ratio_steps_per_s"] > 0
    ceiling = subprocess.run([sys.executable, "-m", "benchmarks.precision_ceiling", str(tmp_path / "work" / "idx" / "text-auto"),
                              "--rounds", "1"], cwd=REPO, env={**env, "RETRIEVER_BENCH_RESULTS": str(tmp_path)},
                             capture_output=True, text=True, timeout=1800)
    assert ceiling.returncode == 0, ceiling.stderr[-4000:]
    ways = json.loads((tmp_path / "precision_ceiling.json").read_text())["ways"]
    assert set(ways) == {"raw_fp32", "autocast_whole_model", "bf16_weights", "engine_auto"}
    assert ways["raw_fp32"]["ratio_vs_raw_fp32"] == 1.0 and all(row["min_cosine_vs_fp32"] > 0.99 for row in ways.values())
