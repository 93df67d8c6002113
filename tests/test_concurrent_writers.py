"""Many writers at once on one index: one holds the lock, the others wait or exit 2 with one line, and the
index afterwards equals the serial application of the writers that succeeded, in commit order.

Every writer is a real ``retriever`` process. Each holds the lock a little longer than it needs
(``RETRIEVER_TEST_FAULT=after-index-write:SECONDS``), so writers started together really overlap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import OFFLINE_ENV, REPO, assert_one_line_error
from tests.index_snapshots import corpus_records, snapshot, write_jsonl

WAIT_LONG = "600"


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, tiny_model) -> Path:
    """A 40-document HNSW index (it keeps deleted vectors, so compact has work) built with the tiny model."""
    from indexing.builder import BuildConfig, build_index
    from indexing.readers import read_corpus
    from retriever.encoders.base import load_encoder

    folder = tmp_path_factory.mktemp("writers")
    corpus = write_jsonl(folder / "base.jsonl", corpus_records("d", 40))
    encoder = load_encoder(str(tiny_model), device="cpu", precision="fp32")  # exact replay: fp32 on both sides
    build_index(folder / "base", lambda: read_corpus([corpus]), encoder,
                BuildConfig(corpus=(str(corpus),), factory="HNSW32", chunk_tokens=0))
    return folder / "base"


def _writers(folder: Path, rng: random.Random) -> list[dict]:
    """Ten writers of mixed kinds; six fail at once when the index is busy, four wait for it."""
    specs: list[dict] = []
    for n in range(3):
        path = write_jsonl(folder / f"add{n}.jsonl", corpus_records(f"a{n}-", 4))
        specs.append({"kind": "add", "args": ["index", "add", "IDX", path], "file": path})
    for n in range(2):
        changed = corpus_records("d", 3, start=n * 3, variant=f"v{n} ") + corpus_records(f"u{n}-", 2)
        path = write_jsonl(folder / f"upsert{n}.jsonl", changed)
        specs.append({"kind": "upsert", "args": ["index", "add", "IDX", path, "--upsert"], "file": path})
    for n in range(3):
        ids = [f"d{i}" for i in rng.sample(range(40), 3)]
        specs.append({"kind": "delete", "args": ["index", "delete", "IDX", "--ids", ",".join(ids)], "ids": ids})
    for _ in range(2):
        specs.append({"kind": "compact", "args": ["index", "compact", "IDX"]})
    waits = ["0"] * 6 + [WAIT_LONG] * 4
    rng.shuffle(waits)
    for spec, wait in zip(specs, waits):
        spec["wait"] = wait
    return specs


def _replay(path: Path, spec: dict, encoder) -> None:
    from indexing.readers import read_corpus
    from indexing.updates import add_documents, compact, delete_documents

    if spec["kind"] in ("add", "upsert"):
        add_documents(path, read_corpus([spec["file"]]), encoder, upsert=spec["kind"] == "upsert")
    elif spec["kind"] == "delete":
        delete_documents(path, spec["ids"])
    else:
        compact(path)


def _committed(spec: dict, report: dict) -> bool:
    """Whether a successful writer made a new version (a delete of absent ids or an idle compact does not)."""
    return spec["kind"] in ("add", "upsert") or report.get("deleted", 0) > 0


def _run_round(tmp_path: Path, base: Path, seed: int) -> dict[str, int]:
    print(f"writers round seed={seed}")
    rng = random.Random(seed)
    index = tmp_path / f"idx{seed}"
    shutil.copytree(base, index)
    before = snapshot(index)
    specs = _writers(tmp_path, rng)
    env = {**os.environ, **OFFLINE_ENV, "RETRIEVER_TEST_FAULT": "after-index-write:1.0"}
    procs = []
    for spec in specs:
        args = [str(index) if a == "IDX" else str(a) for a in spec["args"]] + ["--json", "--wait", spec["wait"]]
        procs.append(subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for spec, proc in zip(specs, procs):
        out, err = proc.communicate(timeout=900)
        results.append((spec, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
    codes = [done.returncode for _, done in results]
    assert set(codes) <= {0, 2}, f"seed={seed}: exit codes {codes}\n" + "\n".join(d.stderr for _, d in results)
    for spec, done in results:
        assert "Traceback" not in done.stderr, f"seed={seed} {spec['kind']}: {done.stderr}"
        if done.returncode == 2:
            assert_one_line_error(done, "another writer holds the index", "(pid ")
    succeeded = [(spec, json.loads(done.stdout.strip().splitlines()[-1])) for spec, done in results if done.returncode == 0]
    assert len(succeeded) >= 3 and codes.count(2) >= 3, f"seed={seed}: exit codes {codes}"

    commits = sorted((report["version"], spec) for spec, report in succeeded if _committed(spec, report))
    versions = [v for v, _ in commits]
    assert versions == list(range(before.version + 1, before.version + 1 + len(commits))), f"seed={seed}: {versions}"

    from retriever.encoders.base import encoder_from_manifest
    from indexing.manifest import read_manifest

    replayed = tmp_path / f"replay{seed}"
    shutil.copytree(base, replayed)
    encoder = encoder_from_manifest(read_manifest(base).encoder, device="cpu")
    for _, spec in commits:
        _replay(replayed, spec, encoder)
    got, want = snapshot(index), snapshot(replayed)
    assert got.version == want.version and got.documents == want.documents, f"seed={seed}"
    assert got.counts == want.counts and got.hits == want.hits, f"seed={seed}"
    leftovers = sorted(p.name for p in index.iterdir() if p.name.startswith(("index.v", "docstore.v")))
    assert len(leftovers) == 2, f"seed={seed}: files of other versions left behind: {leftovers}"
    return {"ok": len(succeeded), "refused": codes.count(2), "commits": len(commits)}


def test_ten_mixed_writers_serialize_and_the_index_equals_their_serial_replay(tmp_path, base_index):
    seeds = [int(os.environ.get("RETRIEVER_TEST_SEED", "35")) + n for n in range(2)]
    for seed in seeds:
        started = time.perf_counter()
        counts = _run_round(tmp_path, base_index, seed)
        print(f"seed={seed}: {counts} in {time.perf_counter() - started:.0f}s")


@pytest.mark.slow
def test_ten_mixed_writers_twenty_rounds(tmp_path, base_index):
    seed0 = int(os.environ.get("RETRIEVER_TEST_SEED", "3500"))
    totals = {"ok": 0, "refused": 0, "commits": 0}
    for seed in range(seed0, seed0 + 20):
        for key, value in _run_round(tmp_path, base_index, seed).items():
            totals[key] += value
    print(f"20 rounds from seed {seed0}: {totals}")
