"""The CLI as a user runs it: commands, --json shapes, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.cli_helpers import assert_one_line_error, run_cli, run_cli_many

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def built(tmp_path, small_corpus, tiny_model):
    out = tmp_path / "idx"
    result = run("index", "build", small_corpus, "--out", out, "--model", tiny_model, "--index", "Flat", "--chunk-tokens", "16", "--chunk-overlap", "4", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


def test_build_info_search_json(built):
    info = json.loads(run("index", "info", built, "--json").stdout)
    assert info["counts"]["documents"] == 60 and info["factory"] == "Flat"
    result = run("search", built, "dense retrieval", "-k", "3", "--json", "--device", "cpu")
    assert result.exit_code == 0
    record = json.loads(result.stdout.strip())
    assert record["query"] == "dense retrieval" and len(record["hits"]) == 3
    assert set(record["hits"][0]) == {"id", "score", "title", "text", "passage", "metadata"}
    table = run("search", built, "dense retrieval", "-k", "2", "--device", "cpu")
    assert table.exit_code == 0 and "rank" in table.stdout


def test_filters_and_batch_queries_to_trec(built, tmp_path):
    result = run("search", built, "query", "-k", "5", "--json", "--filter", "lang=fr", "--device", "cpu")
    hits = json.loads(result.stdout)["hits"]
    assert len(hits) == 5 and {h["metadata"]["lang"] for h in hits} == {"fr"}
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "dense vector"}\n{"_id": "q2", "text": "token window"}\n')
    run_file = tmp_path / "run.trec"
    result = run("search", built, "--queries", queries, "-k", "4", "--output", run_file, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = run_file.read_text().splitlines()
    assert len(lines) == 8 and lines[0].split()[:2] == ["q1", "Q0"] and lines[0].split()[3] == "1"


def test_add_delete_compact_through_cli(built, tmp_path):
    extra = tmp_path / "extra.tsv"
    extra.write_text("id\ttitle\ttext\tlang\nx1\tNew\tfresh words about windows\tde\n")
    assert run("index", "add", built, extra, "--device", "cpu").exit_code == 0
    hits = json.loads(run("search", built, "fresh", "-k", "1", "--json", "--filter", "lang=de", "--device", "cpu").stdout)["hits"]
    assert hits[0]["id"] == "x1"
    assert_one_line_error(run_cli("index", "add", built, extra, "--device", "cpu"), "extra.tsv:2", "duplicate id 'x1'")
    result = run("index", "delete", built, "--ids", "x1,d3", "--json")
    assert json.loads(result.stdout)["deleted"] == 2
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("d4\nd5\n")
    assert json.loads(run("index", "delete", built, "--ids-file", ids_file, "--json").stdout)["deleted"] == 2
    assert json.loads(run("index", "info", built, "--json").stdout)["counts"]["documents"] == 57
    assert run("index", "compact", built).exit_code == 0
    assert run("index", "verify", built).exit_code == 0


def test_user_errors_are_one_line(tmp_path, built, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    missing_text = tmp_path / "nt.jsonl"
    missing_text.write_text('{"_id": "a"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"_id": "a", "text": "caf\xe9"}\n')
    corpus = tmp_path / "ok.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n')
    cases = [
        (("index", "build", bad, "--out", tmp_path / "o", "--model", tiny_model), ("bad.jsonl:2",)),
        (("index", "build", missing_text, "--out", tmp_path / "o2", "--model", tiny_model), ("nt.jsonl:1", "text")),
        (("index", "build", tmp_path / "nope.jsonl", "--out", tmp_path / "o3"), ("nope.jsonl",)),
        (("index", "build", empty, "--out", tmp_path / "o4", "--model", tiny_model), ("empty corpus",)),
        (("index", "build", latin, "--out", tmp_path / "o5", "--model", tiny_model), ("latin.jsonl:1", "UTF-8")),
        (("index", "build", corpus, "--out", tmp_path / "o6", "--model", "no-such-model-xyz"), ("unknown model",)),
        (("search", built, "q", "-k", "0"), ("-k must be >= 1",)),
        (("search", tmp_path / "nowhere", "q"), ("no such index",)),
        (("index", "build", corpus, "--out", built, "--model", tiny_model), ("an index exists",)),
        (("search", built, "q", "--filter", "novalue"), ("FIELD=VALUE",)),
        (("index", "build", corpus, "--out", tmp_path / "o7", "--model", tiny_model, "--index", "Bogus12"), ("invalid FAISS factory",)),
    ]
    for (_, fragments), proc in zip(cases, run_cli_many([args for args, _ in cases])):
        assert_one_line_error(proc, *fragments)


def test_device_cuda_without_gpu_is_an_error(built):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(run_cli("search", built, "q", "--device", "cuda"), "no CUDA device")


def test_from_vectors(tmp_path):
    import numpy as np

    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(f"v{i}" for i in range(50)) + "\n")
    result = run("index", "from-vectors", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt", "--out", tmp_path / "vi", "--index", "Flat")
    assert result.exit_code == 0, result.output
    assert json.loads(run("index", "info", tmp_path / "vi", "--json").stdout)["counts"]["passages"] == 50
