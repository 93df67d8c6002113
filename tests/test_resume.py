"""A build killed at random points (SIGKILL) resumes to exactly the index an uninterrupted build makes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexing.manifest import read_manifest
from retriever.search.searcher import Searcher
from tests.cli_helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
# The kill points are random but reproducible: RETRIEVER_TEST_SEED=N replays a run (the seed is printed and in failures).
SEED = int(os.environ.get("RETRIEVER_TEST_SEED", "20240611"))


def _build_cmd(corpus: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cli", "index", "build", str(corpus), "--out", str(out), "--model", str(model),
        "--index", "Flat", "--chunk-tokens", "12", "--chunk-overlap", "3", "--shard-docs", "2", "--device", "cpu", "--precision", "fp32", *extra,
    ]


def _shards_done(out: Path) -> int:
    shards = out / ".build" / "shards"
    return len(list(shards.glob("*.ids.npy"))) if shards.exists() else 0


def _kill_when(cmd: list[str], out: Path, shards: int, timeout: float = 120) -> bool:
    """Start ``cmd``, SIGKILL it once ``shards`` shards exist; False if it finished first."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _shards_done(out) >= shards:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def _passages(out: Path) -> list[tuple]:
    manifest = read_manifest(out)
    with sqlite3.connect(out / manifest.files["docstore"]) as conn:
        return conn.execute("SELECT pid, doc_id, idx, start, end FROM passages ORDER BY pid").fetchall()


def test_killed_build_resumes_to_the_same_index(tmp_path, tiny_model):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i in range(240):
            text = " ".join(words[(i * 5 + j * 3) % len(words)] for j in range(8 + i % 30))
            fh.write(json.dumps({"_id": f"doc{i}", "text": text}) + "\n")

    reference = tmp_path / "reference"
    subprocess.run(_build_cmd(corpus, reference, tiny_model), cwd=REPO, check=True, capture_output=True)

    resumed = tmp_path / "resumed"
    rng = np.random.default_rng(SEED)
    points = sorted(rng.choice(np.arange(3, 110), size=3, replace=False).tolist())
    where = f"seed {SEED} (RETRIEVER_TEST_SEED), kill points {points}"
    print(where)
    kills = 0
    for point in points:
        extra = ("--resume",) if (resumed / ".build").exists() else ()
        kills += _kill_when(_build_cmd(corpus, resumed, tiny_model, *extra), resumed, int(point))
        assert not (resumed / "manifest.json").exists(), f"looks complete after a kill; {where}"
    assert kills >= 3, f"the build finished before being killed; {where}"
    done = subprocess.run(_build_cmd(corpus, resumed, tiny_model, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"{where}\n{done.stderr}"

    assert _passages(resumed) == _passages(reference), where
    a = Searcher.load(reference, device="cpu")
    b = Searcher.load(resumed, device="cpu")
    pids = np.arange(a.opened.vectors.ntotal)
    np.testing.assert_allclose(a.opened.vectors.reconstruct(pids), b.opened.vectors.reconstruct(pids), atol=1e-6,
                               err_msg=where)
    queries = a.encoder.encode_queries(["alpha beta", "kappa lambda mu", "zeta"])
    assert [h.ids for h in a.retrieve_vectors(queries, 10)] == [h.ids for h in b.retrieve_vectors(queries, 10)], where


def test_resume_refuses_other_settings(tmp_path, tiny_model, small_corpus):
    out = tmp_path / "idx"
    assert _kill_when(_build_cmd(small_corpus, out, tiny_model), out, 2)
    result = subprocess.run(
        _build_cmd(small_corpus, out, tiny_model, "--resume") + ["--chunk-tokens", "20"], cwd=REPO, capture_output=True, text=True
    )
    assert_one_line_error(result, "other settings")
    again = subprocess.run(_build_cmd(small_corpus, out, tiny_model), cwd=REPO, capture_output=True, text=True)
    assert_one_line_error(again, "--resume")
