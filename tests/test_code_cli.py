"""Code search as a user runs it: index a source tree, search it in plain English, train a code model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.cli_helpers import assert_one_line_error, run_cli

runner = CliRunner()

TREE = {
    "pkg/files.py": '''import os


def readLinesFromFile(filePath):
    """Open a text file and return its lines without trailing newlines."""
    with open(filePath) as handle:
        return [line.rstrip("\\n") for line in handle]


def count_words(text):
    """Count how many times each word occurs in a string."""
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts
''',
    "pkg/net.py": '''class Client:
    def __init__(self, host, port=80):
        self.host = host
        self.port = port

    @property
    def timeout(self):
        return self._timeout

    @timeout.setter
    def timeout(self, seconds):
        self._timeout = seconds

    def fetchUrl(self, path):
        """Download a web page over HTTP and return the body."""
        import urllib.request
        return urllib.request.urlopen(f"http://{self.host}:{self.port}{path}").read()


def celsius_to_fahrenheit(degrees):
    return degrees * 9 / 5 + 32
''',
    "legacy/old.py": 'print "python 2"\n',
}


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def source_tree(tmp_path) -> Path:
    root = tmp_path / "project"
    for rel, text in TREE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_index_a_source_tree_and_find_a_function_in_plain_english(tmp_path, source_tree, caplog):
    index = tmp_path / "idx"
    built = run("index", "build", source_tree, "--encoder", "code", "--out", index, "--device", "cpu", "--json")
    assert built.exit_code == 0, built.output
    manifest = json.loads(built.stdout.strip().splitlines()[-1])
    assert manifest["encoder"]["preset"] == "code" and manifest["encoder"]["preprocessor"] == "code-identifiers-v1"
    assert manifest["counts"]["documents"] == 8  # 7 functions + the Python 2 file kept whole as text
    assert any("old.py:1: does not parse as Python 3" in r.getMessage() for r in caplog.records)

    cases = {
        "convert a temperature from celsius": "pkg/net.py:celsius_to_fahrenheit:20",
        "read all lines of a text file": "pkg/files.py:readLinesFromFile:4",
        "download a web page": "pkg/net.py:Client.fetchUrl:14",
        "how often does each word appear": "pkg/files.py:count_words:10",
    }
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(cases)), encoding="utf-8")
    hits = run("search", index, "--queries", queries, "-k", "3", "--json", "--device", "cpu")
    assert hits.exit_code == 0, hits.output
    records = [json.loads(line) for line in hits.stdout.strip().splitlines()]
    assert {r["query"]: r["hits"][0]["id"] for r in records} == cases
    top = records[0]["hits"][0]
    assert top["metadata"] == {"path": "pkg/net.py", "qualname": "celsius_to_fahrenheit", "language": "python",
                               "start_line": 20, "end_line": 21}
    assert top["title"] == "def celsius_to_fahrenheit(degrees)"

    table = runner.invoke(app, ["search", str(index), "convert a temperature from celsius", "-k", "1", "--device", "cpu"],
                          terminal_width=200)
    assert table.exit_code == 0 and "pkg/net.py:20" in table.output and "celsius_to_fahrenhe" in table.output


def test_code_model_trains_through_the_cli_and_records_its_preset(tmp_path, tiny_model):
    import json as _json

    src = Path(_json.__file__).parent  # the stdlib json package: a real source tree present wherever Python runs
    exclude = tmp_path / "exclude.jsonl"
    first = src / "encoder.py"
    from indexing.code_reader import python_functions

    excluded = python_functions(first.read_text(encoding="utf-8"))[0]
    exclude.write_text(_json.dumps({"_id": "x", "text": excluded.code}) + "\n", encoding="utf-8")
    out = tmp_path / "model"
    result = run("train", "code", src, "--out", out, "--base", tiny_model, "--exclude", exclude, "--validation", "4",
                 "--eval-every", "1", "--steps", "2", "--batch-size", "4", "--max-tokens", "48", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    record = _json.loads(result.stdout.strip().splitlines()[-1])
    assert record["finished"] and record["best_step"] is not None and "RR@10" in record["best_metrics"]
    assert _json.loads((out / "retriever.json").read_text())["preset"] == "code"
    counts = _json.loads((out / "code_data.json").read_text())
    assert counts["excluded"] == 1 and counts["validation"] == 4 and counts["kept"] > 10
    queries = (out / "validation" / "queries.jsonl").read_text().splitlines()
    assert len(queries) == 4

    # --model OUT alone gives the code preset and its preprocessing
    project = tmp_path / "p"
    (project).mkdir()
    shutil.copy(first, project / "encoder.py")
    index = tmp_path / "idx"
    built = run("index", "build", project, "--model", out, "--out", index, "--device", "cpu", "--json")
    assert built.exit_code == 0, built.output
    manifest = _json.loads(built.stdout.strip().splitlines()[-1])
    assert manifest["encoder"]["preset"] == "code" and manifest["encoder"]["preprocessor"] == "code-identifiers-v1"
    assert manifest["counts"]["documents"] == len(python_functions(first.read_text(encoding="utf-8")))


def test_code_training_selects_on_a_code_search_folder_with_the_code_preprocessing(tmp_path, tiny_model):
    import json as _json

    from training.config import EvalConfig
    from training.dev_eval import DevSet

    beir = tmp_path / "search"
    (beir / "qrels").mkdir(parents=True)
    functions = {"0": "def readFileLines(path):\n    return open(path).read().splitlines()",
                 "1": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32"}
    (beir / "corpus.jsonl").write_text("".join(_json.dumps({"_id": i, "text": t}) + "\n" for i, t in functions.items()))
    (beir / "queries.jsonl").write_text(_json.dumps({"_id": "q", "text": "python read lines of a file"}) + "\n")
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq\t0\t1\n")
    from retriever.encoders.code.identifiers import preprocess_code

    devset = DevSet(EvalConfig(dataset=str(beir), split="dev"), preprocess=preprocess_code)
    assert devset.doc_texts[0] == preprocess_code(functions["0"]) and "read file lines" in devset.doc_texts[0].lower()

    src = Path(_json.__file__).parent  # the stdlib json package
    out = tmp_path / "model"
    result = run("train", "code", src, "--out", out, "--base", tiny_model, "--validation", "0", "--eval", beir,
                 "--eval-split", "dev", "--eval-every", "1", "--steps", "2", "--batch-size", "4", "--max-tokens", "48",
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    history = _json.loads((out / "training.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 1, 2] and all("RR@10" in h["metrics"] for h in history)
    assert not (out / "validation").exists()


def test_train_code_errors_are_one_line(tmp_path, tiny_model):
    result = run_cli("train", "code", tmp_path / "missing", "--out", tmp_path / "m", "--base", tiny_model, "--device", "cpu")
    assert_one_line_error(result, "no such file or directory")
    result = run_cli("train", "code", tmp_path, "--out", tmp_path / "m", "--doc-ratio", "2", "--device", "cpu")
    assert_one_line_error(result, "--doc-ratio must be in [0, 1]")
    result = run_cli("train", "code", tmp_path, "--out", tmp_path / "m", "--validation", "0", "--eval-every", "5", "--device", "cpu")
    assert_one_line_error(result, "--eval-every needs --validation > 0 or --eval")


def test_code_pairs_folder_trains_a_query_encoder_against_its_index(tmp_path, tiny_model):
    """`train code-pairs` writes docstring-summary queries and their functions as a BEIR folder (excluded
    functions left out, docstrings removed unless kept); the folder indexes and feeds `train finetune
    --negatives-from IDX --query-only`, whose output keeps the base's document side."""
    import json as _json

    from indexing.code_reader import python_functions

    src = Path(_json.__file__).parent  # the stdlib json package
    functions = python_functions((src / "decoder.py").read_text(encoding="utf-8"))
    excluded = next(fn for fn in functions if fn.docstring and fn.end_line - fn.start_line >= 3)
    exclude = tmp_path / "exclude.jsonl"
    exclude.write_text(_json.dumps({"_id": "x", "text": excluded.code}) + "\n", encoding="utf-8")

    pairs = tmp_path / "pairs"
    result = run("train", "code-pairs", src, "--out", pairs, "--exclude", exclude, "--summaries-only", "--json")
    assert result.exit_code == 0, result.output
    counts = _json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["excluded"] == 1 and counts["documents"] > 5
    corpus = [_json.loads(line) for line in (pairs / "corpus.jsonl").read_text().splitlines()]
    queries = [_json.loads(line) for line in (pairs / "queries.jsonl").read_text().splitlines()]
    qrels = (pairs / "qrels" / "train.tsv").read_text().splitlines()[1:]
    assert len(corpus) == counts["documents"] and len(queries) == len(qrels) == counts["queries"] > 5
    assert max(len(q["text"].split()) for q in queries) <= 16  # the default --max-query-words
    unlimited = tmp_path / "unlimited"
    assert run("train", "code-pairs", src, "--out", unlimited, "--exclude", exclude, "--summaries-only",
               "--max-query-words", "0").exit_code == 0
    assert len((unlimited / "queries.jsonl").read_text().splitlines()) == len(corpus) > len(queries)
    assert not any(excluded.code.strip() in doc["text"] for doc in corpus)
    assert all('"""' not in doc["text"] for doc in corpus)  # docstrings removed: the query is not in its document
    assert all(q["text"] == q["text"].lower() and "." not in q["text"] for q in queries)
    assert not list(pairs.rglob("*.tmp"))

    kept = tmp_path / "kept"
    assert run("train", "code-pairs", src, "--out", kept, "--keep-docstrings").exit_code == 0
    with_docs = [_json.loads(line) for line in (kept / "corpus.jsonl").read_text().splitlines()]
    assert len(with_docs) > len(corpus)  # distractors without a summary are documents too
    assert any('"""' in doc["text"] for doc in with_docs)

    index = tmp_path / "idx"
    built = run("index", "build", pairs, "--out", index, "--model", tiny_model, "--index", "Flat", "--chunk-tokens", "0",
                "--device", "cpu")
    assert built.exit_code == 0, built.output
    out = tmp_path / "q-model"
    trained = run("train", "finetune", pairs, "--out", out, "--base", tiny_model, "--negatives-from", index,
                  "--negatives-per-query", "2", "--query-only", "--steps", "2", "--batch-size", "4", "--device", "cpu",
                  "--json")
    assert trained.exit_code == 0, trained.output
    from sentence_transformers import SentenceTransformer

    model, base = SentenceTransformer(str(out), device="cpu"), SentenceTransformer(str(tiny_model), device="cpu")
    text = corpus[0]["text"]
    assert abs(model.encode_document([text]) - base.encode([text])).max() < 1e-5


def test_code_pairs_errors_are_one_line(tmp_path):
    assert_one_line_error(run_cli("train", "code-pairs", tmp_path / "missing", "--out", tmp_path / "p"), "no such file or directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("train", "code-pairs", tmp_path / "empty", "--out", tmp_path / "p"), "no function found")


def test_name_query_reads_a_function_name_as_a_search():
    from training.code_data import name_query

    query = name_query("lib/io.py:Reader.read_all_lines:12")
    assert sorted(query.split()) == ["all", "lines", "python", "read"]
    assert query.split()[0] == "python" or query.split()[-1] == "python"
    assert name_query("a.py:parseHTTPResponse:3").replace("python", "").split() == ["parse", "http", "response"]
    assert name_query("a.py:C.__init__:3") == name_query("a.py:_private_helper:3") == ""
    assert name_query("a.py:run:3") == name_query("a.py:test_read_lines:3") == ""
    assert name_query("a.py:read_lines:3") == name_query("a.py:read_lines:3")  # deterministic


def test_code_pairs_name_queries_rename_the_function_in_its_document(tmp_path):
    """`--queries names`: the function's name written as a search is the query, and the document's function is
    renamed (v0), so the query is not found verbatim; `both` adds the docstring summary as a second query."""
    import ast
    import json as _json

    src = Path(_json.__file__).parent  # the stdlib json package
    names = tmp_path / "names"
    result = run("train", "code-pairs", src, "--out", names, "--keep-docstrings", "--queries", "names", "--json")
    assert result.exit_code == 0, result.output
    corpus = {d["_id"]: d for d in map(_json.loads, (names / "corpus.jsonl").read_text().splitlines())}
    queries = [_json.loads(line) for line in (names / "queries.jsonl").read_text().splitlines()]
    qrels = [line.split("\t") for line in (names / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    assert queries and all(q["_id"].startswith("n") and "python" in q["text"].split() for q in queries)
    assert {(q["_id"], "f" + q["_id"][1:]) for q in queries} == {(qid, doc) for qid, doc, _ in qrels}
    for query in queries:
        doc = corpus["f" + query["_id"][1:]]
        name = doc["origin"].rsplit(":", 2)[1].split(".")[-1]
        tree = ast.parse(doc["text"])  # still parses
        assert tree.body[0].name == "v0" and f"def {name}(" not in doc["text"]
    unnamed = [d for d in corpus.values() if not d["text"].startswith(("def v0", "async def v0"))]
    assert unnamed  # functions whose names say too little are documents only, not renamed

    both = tmp_path / "both"
    assert run("train", "code-pairs", src, "--out", both, "--keep-docstrings", "--queries", "both").exit_code == 0
    kinds = {q["_id"][0] for q in map(_json.loads, (both / "queries.jsonl").read_text().splitlines())}
    assert kinds == {"q", "n"}
    bad = run("train", "code-pairs", src, "--out", tmp_path / "bad", "--queries", "titles")
    assert bad.exit_code == 2 and "--queries must be one of summaries, names, both" in bad.output
