"""DDP: ``torchrun --nproc_per_node 2`` (gloo, CPU) trains the same weights as one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.test_training_helpers import max_weight_difference, tiny_model_no_dropout, weight_differences  # noqa: F401 (fixture)

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed beside this python")
def test_two_processes_equal_one(tmp_path, small_corpus, tiny_model_no_dropout):
    recipe = ["train", "contriever", str(small_corpus), "--base", str(tiny_model_no_dropout), "--steps", "3", "--batch-size", "4",
              "--accumulate", "2", "--queue-size", "8", "--lr", "1e-4", "--warmup", "1", "--max-tokens", "32", "--device", "cpu",
              "--precision", "fp32"]  # exact comparison: bf16 autocast (auto on AMX CPUs) rounds each half differently
    _assert_two_processes_equal_one(tmp_path, recipe, tiny_model_no_dropout)


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed beside this python")
def test_two_processes_equal_one_with_a_hybrid_teacher(tmp_path, small_corpus, tiny_model_no_dropout):
    """The distillation term is computed on gathered scores, so it too is global."""
    index = tmp_path / "idx"
    built = CliRunner().invoke(app, ["index", "build", str(small_corpus), "--out", str(index), "--model", str(tiny_model_no_dropout),
                                     "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu", "--bm25"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    recipe = ["train", "contriever", str(small_corpus), "--base", str(tiny_model_no_dropout), "--anchor", "title",
              "--min-sentence-words", "2", "--negatives-from", str(index), "--negative-ranks", "1-10",
              "--negatives-per-query", "2", "--teacher", "hybrid", "--queue-size", "0", "--steps", "2", "--batch-size", "4",
              "--lr", "1e-4", "--warmup", "1", "--max-tokens", "32", "--device", "cpu", "--precision", "fp32"]
    _assert_two_processes_equal_one(tmp_path, recipe, tiny_model_no_dropout, steps=2)


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed beside this python")
def test_time_limit_stops_every_rank_at_the_same_step(tmp_path, small_corpus, tiny_model_no_dropout):
    """Rank 0's clock decides: both ranks end after step 1 (else the collectives of step 2 would hang)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [str(TORCHRUN), "--nproc_per_node", "2", "--standalone", "-m", "cli", "train", "contriever", str(small_corpus),
               "--base", str(tiny_model_no_dropout), "--steps", "5", "--batch-size", "4", "--queue-size", "8",
               "--max-tokens", "32", "--device", "cpu", "--max-minutes", "0.000001", "--out", str(tmp_path / "two"), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["timed_out"] and not result["finished"] and result["steps_done"] == 1
    assert (tmp_path / "two" / "model.safetensors").is_file()


def _assert_two_processes_equal_one(tmp_path, recipe, base, *, steps: int = 3):
    single = CliRunner().invoke(app, [*recipe, "--out", str(tmp_path / "one")], catch_exceptions=False)
    assert single.exit_code == 0, single.output
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [str(TORCHRUN), "--nproc_per_node", "2", "--standalone", "-m", "cli", *recipe,
               "--out", str(tmp_path / "two"), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert result["finished"] and result["steps_done"] == steps
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1
    # Same global batch, same gradients up to float summation order (two halves all-reduced vs one sum). AdamW's
    # first steps move each weight by about +-lr whatever the gradient's size, so a weight whose gradient is ~0
    # can take a rounding-noise sign and land up to 2 * lr away (seen once: 3.3e-5). Such weights must stay rare;
    # a real divergence (keys not gathered, a different batch) moves nearly every weight.
    differences = weight_differences(tmp_path / "one", tmp_path / "two")
    assert float(differences.median()) <= 1e-7 and float(differences.max()) <= 1e-3
    assert int((differences > 1e-5).sum()) <= differences.numel() // 1000, differences.topk(5).values
    assert max_weight_difference(tmp_path / "two", base) > 1e-5
    state = json.loads((tmp_path / "two" / "checkpoints" / f"step-{steps:07d}" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
