"""indexing.formats: JSON lines, query files, TREC runs and qrels, read and written by one module each."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from indexing.errors import CorpusError
from indexing.formats.jsonl import load_jsonl, read_jsonl, write_jsonl
from indexing.formats.lines import read_lines, write_lines
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels, read_run, write_run


def write(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` (gzip-compressed for ``.gz``) and return the path."""
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.lower().endswith(".gz") else data)
    return path


# --- JSON lines --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "DATA.JSONL.GZ"])
def test_jsonl_reads_gzip_bom_and_skips_blank_lines(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, '\ufeff{"a": 1}\n\n   \n{"b": "é\u2028x"}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "é\u2028x"})]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"a": 1}\n\n{"a": 2\n', "bad.jsonl:3: malformed JSON"),
        ('{"a": 1}\n[1, 2]\n', "bad.jsonl:2: expected a JSON object, got list"),
        ('[{"a": 1},\n', "bad.jsonl:1: malformed JSON .*a JSON array is not supported"),
        ('{"a": 1}\n"text"\n', "bad.jsonl:2: expected a JSON object, got str"),
    ],
)
def test_a_bad_jsonl_line_is_one_error_naming_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(CorpusError, match=expected) as info:
        load_jsonl(path)
    assert "\n" not in str(info.value) and info.value.path == str(path)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="missing.jsonl: no such file or directory"):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="is a folder"):
        load_jsonl(tmp_path)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match="latin1.jsonl:2: invalid UTF-8"):
        load_jsonl(tmp_path / "latin1.jsonl")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-30])
    with pytest.raises(CorpusError, match="cut.jsonl.gz:.*truncated gzip"):
        load_jsonl(truncated)


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_jsonl_round_trips_atomically(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub" / name
    records = [{"_id": "1", "text": "naïve 東京"}, {"n": [1, 2], "x": None}]
    assert write_jsonl(path, iter(records)) == 2
    assert load_jsonl(path) == records
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    assert "naïve 東京".encode() in raw  # UTF-8 kept, not \u-escaped

    def failing():
        yield {"ok": 1}
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        write_jsonl(path, failing())
    assert load_jsonl(path) == records  # untouched
    with pytest.raises(TypeError):
        write_jsonl(path, [{"bad": object()}])
    assert load_jsonl(path) == records and sorted(p.name for p in path.parent.iterdir()) == [name]


def test_write_lines_gives_the_permissions_open_gives(tmp_path: Path) -> None:
    path, plain = tmp_path / "run.txt", tmp_path / "plain.txt"
    write_lines(path, ["a\n", "b"])
    plain.write_text("x")  # a temporary file from mkstemp would be 0600 whatever the umask
    assert path.stat().st_mode == plain.stat().st_mode
    assert list(read_lines(path)) == [(1, "a\n"), (2, "b")]


# --- query files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["queries.jsonl", "queries.json.gz"])
def test_jsonl_queries(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, '\ufeff{"_id": "q1", "text": "first"}\n\n{"_id": 7, "text": "seven", "x": 1}\n'
                                  '{"id": "q3", "text": "third"}\n')
    assert read_queries(path) == {"q1": "first", "7": "seven", "q3": "third"}


@pytest.mark.parametrize("name", ["queries.tsv", "queries.tsv.gz"])
def test_tsv_queries_with_and_without_a_header(tmp_path: Path, name: str) -> None:
    plain = write(tmp_path / name, "q1\tdense retrieval\n\nq 2\ttabs\tinside\n")
    assert read_queries(plain) == {"q1": "dense retrieval", "q 2": "tabs\tinside"}
    headed = write(tmp_path / f"headed-{name}", "qid\ttext\nq1\tdense retrieval\r\n")
    assert read_queries(headed) == {"q1": "dense retrieval"}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"text": "b"}\n', r"q.jsonl:2: field '_id': missing"),
        ("q.jsonl", '{"_id": "q1"}\n', "q.jsonl:1: field 'text': missing"),
        ("q.jsonl", '{"_id": "q1", "text": 3}\n', "q.jsonl:1: field 'text': must be a string, got int"),
        ("q.jsonl", '{"_id": true, "text": "a"}\n', "q.jsonl:1: field '_id': must be a non-empty string"),
        ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": " \ufeff "}\n', "q.jsonl:2: query 'q2' is blank"),
        ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', "q.jsonl:2: field '_id': duplicate"),
        ("q.jsonl", '{"_id": "q1", "text": "a"}\nnot json\n', "q.jsonl:2: malformed JSON"),
        ("q.tsv", "q1\tfine\nq2\t   \n", "q.tsv:2: query 'q2' is blank"),
        ("q.tsv", "q1\tfine\nno tab here\n", "q.tsv:2: expected id<TAB>text"),
        ("q.tsv", "q1\tfine\n\tno id\n", "q.tsv:2: field 'id': empty query id"),
        ("q.csv", "id,text\nq1,a\n", "q.csv: unknown queries format"),
    ],
)
def test_bad_query_files_name_file_line_and_field(tmp_path: Path, name: str, content: str, expected: str) -> None:
    with pytest.raises(CorpusError, match=expected):
        read_queries(write(tmp_path / name, content))


# --- TREC runs and qrels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_a_run_written_then_read_back_is_equal(tmp_path: Path, name: str) -> None:
    scores = np.asarray([3.5, 1.0 / 3.0, -2.25e-7], dtype=np.float32)
    run = {"q1": (["d2", "d1", "d3"], scores), "q2": (["d9"], [7.0]), "q3": ([], [])}
    path = tmp_path / "runs" / name
    assert write_run(path, run, tag="bm25") == 4
    back = read_run(path)
    assert list(back) == ["q1", "q2"] and back["q2"] == {"d9": 7.0}  # a query without results has no line
    assert list(back["q1"]) == ["d2", "d1", "d3"]  # rank order kept
    assert np.array_equal(np.asarray(list(back["q1"].values()), dtype=np.float32), scores)  # float32 scores exact
    if name == "run.trec":
        assert path.read_text(encoding="utf-8").splitlines()[0] == "q1 Q0 d2 1 3.5 bm25"


def test_read_run_orders_by_rank_and_names_bad_lines(tmp_path: Path) -> None:
    shuffled = write(tmp_path / "r.trec", "q1 Q0 b 2 1.0 t\n\nq1 Q0 a 1 2.0 t\n")
    assert list(read_run(shuffled)["q1"]) == ["a", "b"]
    for content, expected in [("q1 Q0 a 1 2.0\n", "r.trec:1: expected 6 columns"),
                              ("q1 Q0 a 1 2.0 t\nq1 Q0 b zero 1.0 t\n", "r.trec:2: field 'rank'"),
                              ("q1 Q0 a 1 high t\n", "r.trec:1: field 'score': not a number"),
                              ("q1 Q0 a 1 2.0 t\nq1 Q0 a 2 1.0 t\n", "r.trec:2: document 'a' listed twice")]:
        with pytest.raises(CorpusError, match=expected):
            read_run(write(tmp_path / "r.trec", content))


def test_write_run_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_run(path, {"q1": (["d1"], [1.0])}, tag="t")
    for run, tag in [({"q1": (["d1"], [1.0])}, "two words"), ({"q1": (["has space"], [1.0])}, "t"),
                     ({"q1": (["d1", "d2"], [1.0])}, "t"), ({"": (["d1"], [1.0])}, "t")]:
        with pytest.raises(ValueError):
            write_run(path, run, tag=tag)
    assert read_run(path) == {"q1": {"d1": 1.0}} and [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_qrels_with_and_without_the_iteration_column(tmp_path: Path) -> None:
    expected = {"q1": {"d1": 1, "d3": 2}, "q2": {"d5": 0}}
    beir = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2.0\n\nq2\td5\t0\n")
    headerless = write(tmp_path / "plain.tsv.gz", "\ufeffq1\td1\t1\nq1\td3\t2\nq2\td5\t0\n")
    trec = write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d3 2\nq2 Q0 d5 0\n")
    assert read_qrels(beir) == read_qrels(headerless) == read_qrels(trec) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "bad.tsv:2: field 'score': not an integer"),
        ("q1\td1\t1\nq1\td2\t0.5\n", "bad.tsv:2: field 'score'"),
        ("q1\td1\t1\nq1 d2\n", "bad.tsv:2: expected 3 \\(BEIR\\) or 4 \\(TREC\\) columns, got 2"),
        ("q1\td1\t1\n\td2\t1\n", "bad.tsv:2: empty query or document id"),
    ],
)
def test_bad_qrels_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(CorpusError, match=expected):
        read_qrels(write(tmp_path / "bad.tsv", content))
