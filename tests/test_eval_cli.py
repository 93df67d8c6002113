"""``retriever eval`` as a user runs it, on a tiny BEIR folder whose BM25 metrics are computed by hand.

Needs Java 21+ and pyserini for the BM25 runs (skipped otherwise).
"""

from __future__ import annotations

import json
import math
import os
from importlib import util

import pytest
from typer.testing import CliRunner

from cli.main import app
from indexing.errors import RetrieverError
from retriever.search.java import find_java_home

runner = CliRunner()

CORPUS = [
    {"_id": "d0", "title": "Photosynthesis", "text": "Chlorophyll in plant leaves turns sunlight into sugar."},
    {"_id": "d1", "title": "Volcanoes", "text": "Magma rises through the crust and erupts as lava."},
    {"_id": "d2", "title": "Black holes", "text": "Gravity bends light near the event horizon."},
    {"_id": "d3", "title": "Vaccines", "text": "Vaccines train the immune system with antigens."},
    {"_id": "d4", "title": "Bees", "text": "Honey bees pollinate flowers in the hive."},
]
QUERIES = [
    {"_id": "q1", "text": "magma lava"},          # BM25: only d1 matches
    {"_id": "q2", "text": "honey bees"},          # BM25: only d4 matches
    {"_id": "q4", "text": "immune antigens"},     # train
    {"_id": "q5", "text": "sunlight chlorophyll"},  # train
]
TEST_QRELS = [("q1", "d1", 1), ("q2", "d4", 1), ("q2", "dX", 1), ("q3", "d2", 1)]  # dX: not indexed; q3: no text
TRAIN_QRELS = [("q4", "d3", 1), ("q5", "d0", 1)]

# By hand, BM25 run (q1 -> [d1], q2 -> [d4], q3 -> nothing):
#   nDCG@10: q1 1; q2 1 / (1 + 1/log2(3)) (two relevant, one found at rank 1); q3 0
#   R@100:   q1 1; q2 1/2; q3 0.     MRR@10: q1 1; q2 1; q3 0.
NDCG_Q2 = 1 / (1 + 1 / math.log2(3))
EXPECTED = {"nDCG@10": (1 + NDCG_Q2) / 3, "R@100": 1.5 / 3, "MRR@10": 2 / 3}


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def stderr(result) -> str:
    return " ".join((result.stderr if hasattr(result, "stderr") else result.output).split())


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _tsv(path, rows):
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def beir(tmp_path_factory, tiny_model):
    """A BEIR folder and an unchunked Flat index of its corpus, with its BM25 index built by ``retriever index bm25``
    (search and eval only read BM25, so every test here passes alone)."""
    if util.find_spec("pyserini") is None:
        pytest.skip("pyserini not installed (pip install 'retriever[bm25]')")
    try:
        find_java_home(os.environ)
    except RetrieverError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("beir")
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    _jsonl(data / "corpus.jsonl", CORPUS)
    _jsonl(data / "queries.jsonl", QUERIES)
    _tsv(data / "qrels" / "test.tsv", TEST_QRELS)
    _tsv(data / "qrels" / "train.tsv", TRAIN_QRELS)
    index = root / "idx"
    result = run("index", "build", data, "--out", index, "--model", tiny_model, "--index", "Flat",
                 "--chunk-tokens", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    bm25 = run("index", "bm25", index)
    assert bm25.exit_code == 0, bm25.output
    return data, index


def test_bm25_metrics_by_hand_with_coverage_and_files(beir, tmp_path):
    data, index = beir
    per_query, trec = tmp_path / "pq.tsv", tmp_path / "run.trec"
    result = run("eval", index, data, "--mode", "bm25", "--json", "--per-query", per_query, "--run", trec)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["metrics"]) == ["nDCG@10", "R@100", "MRR@10"]  # the user's spelling, in order
    for name, value in EXPECTED.items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-4), name
    coverage = report["coverage"]
    assert coverage["documents_not_in_index"] == 1 and coverage["documents_not_in_index_examples"] == ["dX"]
    assert coverage["queries_without_text"] == 1 and coverage["queries_without_text_examples"] == ["q3"]
    assert report["queries"] == 3 and report["missing_queries"] == 1 and report["mode"] == "bm25"
    assert "1 of 4 judged documents" in stderr(result) and "dX" in stderr(result)
    assert "1 of 3 judged queries" in stderr(result) and "q3" in stderr(result)
    rows = [line.split("\t") for line in per_query.read_text().splitlines()]
    assert rows[0] == ["query_id", "nDCG@10", "R@100", "MRR@10"]
    by_query = {r[0]: [float(x) for x in r[1:]] for r in rows[1:]}
    assert by_query["q2"] == pytest.approx([NDCG_Q2, 0.5, 1.0], abs=1e-5) and by_query["q3"] == [0.0, 0.0, 0.0]
    lines = [line.split() for line in trec.read_text().splitlines()]
    assert [(l[0], l[2], l[3], l[5]) for l in lines] == [("q1", "d1", "1", "retriever-bm25"), ("q2", "d4", "1", "retriever-bm25")]


def test_table_output_jsonl_per_query_and_other_metrics(beir, tmp_path):
    data, index = beir
    per_query = tmp_path / "pq.jsonl"
    manifest = (index / "manifest.json").read_bytes()
    result = run("eval", index, data, "--mode", "bm25", "--metrics", "ndcg@10, P@1", "--per-query", per_query)
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.stdout and "P@1" in result.stdout and f"{EXPECTED['nDCG@10']:.4f}" in result.stdout
    assert (index / "manifest.json").read_bytes() == manifest  # eval reads the fixture's BM25 index, commits nothing
    records = [json.loads(line) for line in per_query.read_text().splitlines()]
    assert {r["query_id"]: r["P@1"] for r in records} == {"q1": 1.0, "q2": 1.0, "q3": 0.0}


def test_dense_and_hybrid_with_alpha_tuned_on_train(beir):
    data, index = beir
    dense = json.loads(run("eval", index, data, "--json", "--device", "cpu").stdout)
    assert dense["mode"] == "dense" and 0.0 <= dense["metrics"]["nDCG@10"] <= 1.0
    # 5 documents: every run holds all of them, so R@100 is q1's 1, q2's 1/2 (dX is not indexed), q3's 0
    assert dense["metrics"]["R@100"] == pytest.approx(EXPECTED["R@100"], abs=1e-4)
    result = run("eval", index, data, "--mode", "hybrid", "--tune-alpha", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tuning = report["tuning"]
    assert tuning["split"] == "train" and tuning["metric"] == "nDCG@10" and len(tuning["grid"]) == 21
    assert report["fusion"] == "score" and report["alpha"] == tuning["alpha"]
    assert f"alpha {tuning['alpha']:.2f} chosen on train" in stderr(result)
    assert report["metrics"]["R@100"] == pytest.approx(EXPECTED["R@100"], abs=1e-4)
    rrf = json.loads(run("eval", index, data, "--mode", "hybrid", "--fusion", "rrf", "--json", "--device", "cpu").stdout)
    assert rrf["fusion"] == "rrf" and rrf["alpha"] is None


def test_user_errors(beir, tmp_path):
    data, index = beir

    def error(result, *fragments):
        assert result.exit_code == 2, result.output
        message = stderr(result)
        assert "error:" in message and "Traceback" not in result.output
        for fragment in fragments:
            assert fragment in message, message

    error(run("eval", index, data, "--mode", "hybrid", "--tune-alpha", "--split", "train"),
          "cannot tune alpha on the split being reported ('train')")
    error(run("eval", index, data, "--mode", "hybrid", "--tune-alpha", "--tune-split", "test"), "'test'")
    error(run("eval", index, data, "--mode", "hybrid", "--fusion", "rrf", "--tune-alpha"), "score fusion")
    error(run("eval", index, data, "--mode", "bm25", "--alpha", "0.5"), "hybrid mode only")
    error(run("eval", index, data, "--split", "dev"), "split 'dev'", "available: test, train")
    error(run("eval", index, data, "--metrics", "nDCG@10,Bogus@3"), "unknown metric 'Bogus@3'")
    error(run("eval", tmp_path / "nowhere", data), "no such index")
    error(run("eval", index, tmp_path / "nodata"), "no such dataset folder")
    error(run("search", index, "magma", "--alpha", "0.3"), "--mode hybrid")


def test_search_modes_and_bm25_index_commands(beir, tmp_path, tiny_model):
    data, index = beir
    bm25 = json.loads(run("search", index, "magma lava", "--mode", "bm25", "-k", "3", "--json").stdout)
    assert [h["id"] for h in bm25["hits"]] == ["d1"]
    result = run("search", index, "magma lava", "--mode", "hybrid", "--fusion", "rrf", "-k", "3", "--json", "--device", "cpu")
    hybrid = json.loads(result.stdout)["hits"]
    assert len(hybrid) == 3 and hybrid[0]["id"] == "d1" and set(hybrid[0]) == set(bm25["hits"][0])
    rebuilt = run("index", "bm25", index)
    assert rebuilt.exit_code == 0 and "built BM25 index of 5 documents" in stderr(rebuilt)
    out = tmp_path / "with-bm25"
    built = run("index", "build", data, "--out", out, "--model", tiny_model, "--index", "Flat", "--chunk-tokens", "0",
                "--device", "cpu", "--bm25")
    assert built.exit_code == 0, built.output
    assert "with its BM25 index" in stderr(built) and list(out.glob("bm25*/bm25.json"))
    import inspect

    from cli import eval_cmd, search_cmd
    from retriever.search.hybrid import DEFAULT_ALPHA

    for command in (search_cmd.search, eval_cmd.evaluate):  # the --alpha help states the library default
        assert f"default {DEFAULT_ALPHA}" in inspect.signature(command).parameters["alpha"].default.help
