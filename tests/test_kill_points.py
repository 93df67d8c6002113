"""A writer killed with SIGKILL anywhere leaves the index at the old or the new version, whole.

Named points come from the test-only hook ``RETRIEVER_TEST_FAULT`` (see ``indexing.faults``); random points are
seeded delays after the process starts. Each killed index must open (checksums verified) at the version before
or after the command, with exactly that version's documents and search results, and must accept the next
writer at once (the kernel released the lock).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexing.manifest import read_manifest
from tests.cli_helpers import OFFLINE_ENV, REPO, run_cli
from tests.index_snapshots import Snapshot, corpus_records, snapshot, write_jsonl

NAMED_POINTS = ("after-index-write", "before-manifest-rename", "after-manifest-rename")
RANDOM_POINTS = 5
COMMANDS = ("add", "delete", "compact")


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_model) -> dict:
    """A 30-document HNSW index with three deleted documents pending compaction, and each command's new version."""
    from indexing.builder import BuildConfig, build_index
    from indexing.readers import read_corpus
    from indexing.updates import delete_documents
    from retriever.encoders.base import load_encoder

    folder = tmp_path_factory.mktemp("kills")
    corpus = write_jsonl(folder / "base.jsonl", corpus_records("d", 30))
    base = folder / "base"
    build_index(base, lambda: read_corpus([corpus]), load_encoder(str(tiny_model), device="cpu", precision="fp32"),
                BuildConfig(corpus=(str(corpus),), factory="HNSW32", chunk_tokens=0))
    delete_documents(base, ["d0", "d1", "d2"])
    extra = write_jsonl(folder / "extra.jsonl", corpus_records("n", 6) + corpus_records("d", 2, start=10, variant="new "))
    args = {
        "add": ["index", "add", "IDX", extra, "--upsert"],
        "delete": ["index", "delete", "IDX", "--ids", "d5,d6,d7"],
        "compact": ["index", "compact", "IDX"],
    }
    after, seconds = {}, {}
    for name, command in args.items():
        done = folder / f"done-{name}"
        shutil.copytree(base, done)
        started = time.perf_counter()
        proc = run_cli(*_bind(command, done))
        seconds[name] = time.perf_counter() - started
        assert proc.returncode == 0, proc.stderr
        after[name] = snapshot(done)
    return {"folder": folder, "base": base, "before": snapshot(base), "after": after, "args": args, "seconds": seconds}


def _bind(command: list, index: Path) -> list[str]:
    return [str(index) if a == "IDX" else str(a) for a in command]


def _check_whole(index: Path, before: Snapshot, after: Snapshot, where: str) -> str:
    """The index opens at ``before`` or ``after``, whole; returns which."""
    got = snapshot(index)
    assert got in (before, after), f"{where}: version {got.version} is neither {before.version} nor {after.version} whole"
    return "old" if got == before else "new"


def _follow_up(index: Path, where: str) -> None:
    """The next writer gets the lock at once, commits, and the killed writer's files are gone afterwards."""
    proc = run_cli("index", "delete", index, "--ids", "d20")
    assert proc.returncode == 0, f"{where}: {proc.stderr}"
    named = set(read_manifest(index).files.values())
    stray = [p.name for p in index.iterdir() if p.name.startswith(("index.v", "docstore.v")) and p.name not in named]
    assert not stray, f"{where}: files of a killed writer left after the next commit: {stray}"


@pytest.mark.parametrize("command", COMMANDS)
def test_sigkill_at_named_and_random_points_leaves_a_whole_version(setting, command, tmp_path):
    seed = int(os.environ.get("RETRIEVER_TEST_SEED", "35")) + COMMANDS.index(command)
    rng = random.Random(seed)
    print(f"kill points for {command}: seed={seed}")
    before, after = setting["before"], setting["after"][command]
    outcomes = []
    for point in NAMED_POINTS:
        index = tmp_path / f"named-{point}"
        shutil.copytree(setting["base"], index)
        env = {**os.environ, **OFFLINE_ENV, "RETRIEVER_TEST_FAULT": point}
        proc = subprocess.run([sys.executable, "-m", "cli", *_bind(setting["args"][command], index)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, f"{command} at {point}: not killed ({proc.returncode}) {proc.stderr}"
        outcome = _check_whole(index, before, after, f"{command} at {point}")
        assert outcome == ("new" if point == "after-manifest-rename" else "old"), f"{command} at {point}: {outcome}"
        outcomes.append(outcome)
        if point == "after-index-write":
            _follow_up(index, f"{command} at {point}")
    for n in range(RANDOM_POINTS):
        delay = rng.uniform(0.2, setting["seconds"][command])
        index = tmp_path / f"random-{n}"
        shutil.copytree(setting["base"], index)
        proc = subprocess.Popen([sys.executable, "-m", "cli", *_bind(setting["args"][command], index)], cwd=REPO,
                                env={**os.environ, **OFFLINE_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        outcomes.append(_check_whole(index, before, after, f"{command} killed after {delay:.2f}s (seed={seed})"))
    print(f"{command}: {outcomes}")
