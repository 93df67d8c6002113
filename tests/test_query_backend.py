"""The index's ONNX query encoder: written by build (a writer), used by search without torch, same results."""

from __future__ import annotations

import json
import sys

import pytest

from indexing.manifest import read_manifest
from retriever import Index
from tests.cli_helpers import REPO, assert_one_line_error, run_cli
from tests.index_snapshots import corpus_records, write_jsonl

QUERIES = ["dense retrieval", "vector index search", "token window encoder", "passage 7", "query model"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("qb")
    corpus = write_jsonl(folder / "corpus.jsonl", corpus_records("d", 20))
    done = run_cli("index", "build", corpus, "--out", folder / "idx", "--model", tiny_model, "--index", "Flat")
    assert done.returncode == 0, done.stderr
    return folder / "idx"


def test_build_writes_a_listed_checksummed_onnx_query_encoder(built):
    manifest = read_manifest(built)
    assert {"query_encoder", "query_tokenizer"} <= set(manifest.files)
    for role in ("query_encoder", "query_tokenizer"):
        name = manifest.files[role]
        assert (built / name).is_file() and manifest.checksums[name].startswith("sha256:")
    assert run_cli("index", "verify", built).returncode == 0


def test_both_backends_give_the_same_hits_and_updates_keep_the_graph(built, tmp_path):
    import shutil

    index = tmp_path / "idx"
    shutil.copytree(built, index)
    idx = Index.open(index)
    onnx = idx.search(QUERIES, k=5, query_backend="onnx")
    torch = idx.search(QUERIES, k=5, query_backend="torch")
    assert [[h.id for h in hits] for hits in onnx] == [[h.id for h in hits] for hits in torch]
    for a, b in zip(onnx, torch):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    idx.add(corpus_records("e", 3))
    idx.delete(["d1"])
    manifest = read_manifest(index)
    assert {"query_encoder", "query_tokenizer"} <= set(manifest.files)  # carried forward by every update
    assert [h.id for h in idx.search("passage 7", k=3, query_backend="onnx")] == \
        [h.id for h in idx.search("passage 7", k=3, query_backend="torch")]


def test_cli_search_imports_no_torch_and_matches_the_torch_backend(built):
    done = run_cli("search", built, QUERIES[0], "-k", "5", "--json")
    assert done.returncode == 0, done.stderr
    import subprocess

    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli", "search", str(built), QUERIES[0], "-k", "5",
                            "--json"], cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert timed.returncode == 0, timed.stderr
    imported = {line.split("|")[-1].strip() for line in timed.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "transformers", "sentence_transformers"))
    assert not heavy, f"the search path imported {heavy[:5]}"
    slow = run_cli("search", built, QUERIES[0], "-k", "5", "--json", "--query-backend", "torch")
    fast_hits = json.loads(done.stdout)["hits"]
    slow_hits = json.loads(slow.stdout)["hits"]
    assert [h["id"] for h in fast_hits] == [h["id"] for h in slow_hits]


def test_an_index_without_a_graph_falls_back_to_torch_saying_so_and_onnx_is_an_error(built, tmp_path, tiny_model):
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records("d", 5))
    plain = tmp_path / "plain"
    Index.build(corpus, plain, model=str(tiny_model), index="Flat", query_encoder=False)
    assert "query_encoder" not in read_manifest(plain).files
    done = run_cli("search", plain, "dense retrieval", "-k", "2", "--json")
    notes = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and len(notes) == 1, done.stderr
    assert "no ONNX query encoder" in notes[0] and "retriever index query-encoder" in notes[0]
    assert_one_line_error(run_cli("search", plain, "dense retrieval", "--query-backend", "onnx"),
                          "has no ONNX query encoder", "retriever index query-encoder")
    before = sorted(p.name for p in plain.iterdir())
    run_cli("search", plain, "dense retrieval", "-k", "2")
    assert sorted(p.name for p in plain.iterdir()) == before  # readers never create it
    added = run_cli("index", "query-encoder", plain)
    assert added.returncode == 0, added.stderr
    assert "query_encoder" in read_manifest(plain).files
    quiet = run_cli("search", plain, "dense retrieval", "-k", "2", "--json")
    assert quiet.returncode == 0 and "no ONNX" not in quiet.stderr
