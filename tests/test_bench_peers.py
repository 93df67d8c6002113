"""Smoke test of benchmarks/peers.py: ``--quick`` end to end, every system and figure in the JSON.

Slow: the first run creates the peers' virtual environment (txtai, Chroma, LanceDB, usearch; a few minutes,
needs PyPI), then builds and searches tiny indexes with every system.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.common import DATA, REPO

pytestmark = pytest.mark.slow


def test_peers_quick(tmp_path):
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact under {DATA}")
    from benchmarks import peers

    try:
        peers.peers_python()
    except peers.PeersUnavailable as exc:
        pytest.skip(f"the peers venv cannot be created: {exc}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--quick", "--work", str(tmp_path / "work"), "--output", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "peers-quick.json").read_text())
    assert (tmp_path / "peers-quick.md").read_text().startswith("# The engine vs its peers")

    scifact = results["scifact"]
    figures = ["build_seconds", "build_peak_rss_mib", "ndcg@10", "batch_qps", "latency_p50_ms", "cold_start_seconds"]
    assert set(scifact["systems"]) == set(peers.TEXT_SYSTEMS)
    for system, row in scifact["systems"].items():
        for figure in figures:
            assert row[figure] is not None and row[figure] > 0, (system, figure)
        assert row["hits_have_id_score_text"], system
    for figure in figures:
        assert scifact["ratios"][figure]["best_peer"] in peers.PEERS
        assert scifact["ratios"][figure]["ratio"] > 0
    # the same model and exact (or near-exact) search everywhere: the same quality, give or take a tie
    ndcg = [row["ndcg@10"] for row in scifact["systems"].values()]
    assert max(ndcg) - min(ndcg) < 0.1

    vectors = results["vectors"]["figures"]
    assert set(vectors) == set(peers.FIGURES)
    for figure, (knob, _, members) in peers.FIGURES.items():
        rows = vectors[figure]["systems"]
        assert set(rows) == {system for system, _ in members}, figure
        for system, row in rows.items():
            assert row["batch_qps"] > 0 and row["single_qps"] > 0, (figure, system)
            assert 0 < row["recall@10"] <= 1, (figure, system)
            if knob is None:
                assert row["recall@10"] > 0.99, (figure, system)  # exact search
        for name in ("batch_qps", "single_qps"):
            assert vectors[figure]["ratios"][name]["best_peer"] in peers.PEERS
