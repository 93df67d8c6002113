"""Tests of indexing.readers: every corpus format, gzip, field names and error messages."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from indexing.documents import Document
from indexing.errors import CorpusError
from indexing.readers import FieldNames, detect_format, read_corpus
from tests.conftest import shared_dataset


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def read(*paths, **kwargs) -> list[Document]:
    return list(read_corpus(list(paths), **kwargs))


def corpus_error(*paths, **kwargs) -> CorpusError:
    with pytest.raises(CorpusError) as info:
        read(*paths, **kwargs)
    return info.value


def assert_where(err: CorpusError, path: Path, line: int | None, field: str | None = None) -> None:
    assert err.path == str(path) and err.line == line and err.field == field
    where = str(path) if line is None else f"{path}:{line}"
    assert str(err).startswith(f"{where}: ")
    if field is not None:
        assert f"field '{field}'" in str(err)


# ------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.json", "corpus.jsonl.gz"])
def test_jsonl_beir_fields_metadata_and_origin(tmp_path, name):
    path = write(tmp_path / name, jsonl(
        {"_id": "a", "title": "Title A", "text": "Text A", "metadata": {"year": 2020}, "lang": "en"},
        "",
        "   ",
        {"_id": 7, "title": "", "text": "Text B"},
    ))
    docs = read(path)
    assert docs == [
        Document("a", "Title A", "Text A", {"metadata": {"year": 2020}, "lang": "en"}),
        Document("7", "", "Text B", {}),
    ]
    assert [d.origin for d in docs] == [f"{path}:1", f"{path}:4"]  # blank lines skipped, 1-based


@pytest.mark.parametrize(("id_key", "text_key"), [("id", "contents"), ("docid", "text"), ("doc_id", "body")])
def test_jsonl_auto_field_names(tmp_path, id_key, text_key):
    path = write(tmp_path / "c.jsonl", jsonl({id_key: "x", text_key: "hello", "extra": [1, 2]}))
    assert read(path) == [Document("x", "", "hello", {"extra": [1, 2]})]


def test_auto_id_prefers_first_candidate_and_keeps_the_others(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"id": "second", "_id": "first", "text": "t"}))
    [doc] = read(path)
    assert doc.id == "first" and doc.metadata == {"id": "second"}


def test_configured_field_names(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"pid": 1, "heading": "H", "passage": "P", "title": "kept"}))
    [doc] = read(path, fields=FieldNames(id="pid", title="heading", text="passage"))
    assert doc == Document("1", "H", "P", {"title": "kept"})


@pytest.mark.parametrize("name", ["c.tsv", "c.tsv.gz"])
def test_tsv_with_header(tmp_path, name):
    path = write(tmp_path / name, 'id\ttitle\ttext\tsource\nd1\tT1\tsays "hi", ok\tweb\r\n\nd2\t\tsecond\tnews\n')
    docs = read(path)
    assert docs == [
        Document("d1", "T1", 'says "hi", ok', {"source": "web"}),  # quotes taken verbatim
        Document("d2", "", "second", {"source": "news"}),
    ]
    assert [d.origin for d in docs] == [f"{path}:2", f"{path}:4"]


@pytest.mark.parametrize(
    ("content", "expected", "columns"),
    [
        ("0\tThe first passage.\n1\tThe \"second\" one.\n", [("0", "", "The first passage."), ("1", "", 'The "second" one.')], "id, text"),
        ("0\tT0\tText 0\n", [("0", "T0", "Text 0")], "id, title, text"),
    ],
)
def test_tsv_without_header_msmarco_style(tmp_path, caplog, content, expected, columns):
    path = write(tmp_path / "collection.tsv", content)
    with caplog.at_level(logging.INFO, logger="indexing.readers"):
        docs = read(path)
    assert [(d.id, d.title, d.text) for d in docs] == expected
    assert docs[0].origin == f"{path}:1"
    assert f"reading columns as {columns}" in caplog.text and "no header" in caplog.text


@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz"])
def test_csv_with_quoted_multiline_cells(tmp_path, name):
    content = 'doc_id,title,body,score\r\n1,"A, title","line one\nline two",0.5\r\n2,B,"She said ""yes""",1\r\n'
    path = write(tmp_path / name, content)
    docs = read(path)
    assert docs == [
        Document("1", "A, title", "line one\nline two", {"score": "0.5"}),
        Document("2", "B", 'She said "yes"', {"score": "1"}),
    ]
    assert [d.origin for d in docs] == [f"{path}:2", f"{path}:4"]  # the line where the record starts


def test_csv_long_cell_beyond_default_field_limit(tmp_path):
    long_text = "word " * 40_000
    path = write(tmp_path / "c.csv", f"id,text\n1,{long_text}\n")
    assert read(path)[0].text == long_text


def test_parquet_types_become_json_metadata(tmp_path):
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": pa.array([10, 11], pa.int64()),
        "title": ["T", None],
        "text": ["first", "second"],
        "when": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("s")),
        "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.00")], pa.decimal128(5, 2)),
        "tags": [["a", "b"], []],
        "score": [0.5, 1.0],
    })
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=1)
    docs = read(path)
    assert [(d.id, d.title, d.text) for d in docs] == [("10", "T", "first"), ("11", "", "second")]
    assert docs[0].metadata == {"when": "2024-01-02T03:04:05", "price": "1.50", "tags": ["a", "b"], "score": 0.5}
    assert [d.origin for d in docs] == [f"{path}:1", f"{path}:2"]
    json.dumps([d.metadata for d in docs])


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_beir_folder(tmp_path, name):
    folder = tmp_path / "scifact"
    write(folder / name, jsonl({"_id": "1", "title": "T", "text": "X"}))
    write(folder / "queries.jsonl", jsonl({"_id": "q", "text": "not a document"}))
    assert detect_format(folder) == "beir"
    docs = read(folder)
    assert docs == [Document("1", "T", "X")]
    assert docs[0].origin == f"{folder / name}:1"


def test_text_folder(tmp_path):
    folder = tmp_path / "notes"
    write(folder / "b.md", "intro line\n# Heading B\nbody\n")
    write(folder / "a.txt", "plain text")
    write(folder / "sub" / "c.md", "no heading here\n## Not level one\n")
    write(folder / "sub" / "d.txt.gz", "compressed")
    write(folder / "sub" / "e.md.gz", "# Zipped\ntext")
    write(folder / "image.png", b"\x89PNG")
    write(folder / ".hidden" / "x.txt", "skipped")
    write(folder / ".y.md", "skipped")
    assert detect_format(folder) == "textdir"
    docs = read(folder)
    assert [(d.id, d.title) for d in docs] == [
        ("a.txt", "a"), ("b.md", "Heading B"), ("sub/c.md", "c"), ("sub/d.txt.gz", "d"), ("sub/e.md.gz", "Zipped"),
    ]
    assert docs[1].text == "intro line\n# Heading B\nbody\n"
    assert docs[3].text == "compressed"
    assert docs[2].metadata == {"path": "sub/c.md"}
    assert docs[2].origin == str(folder / "sub" / "c.md")


def test_empty_text_file_keeps_its_stem_title(tmp_path):
    write(tmp_path / "d" / "empty.txt", "")
    assert read(tmp_path / "d") == [Document("empty.txt", "empty", "", {"path": "empty.txt"})]


def test_several_paths_in_order_and_single_path_string(tmp_path):
    a = write(tmp_path / "a.jsonl", jsonl({"_id": "1", "text": "one"}))
    b = write(tmp_path / "b.tsv", "id\ttext\n2\ttwo\n")
    assert [d.id for d in read(a, b)] == ["1", "2"]
    assert [d.id for d in read_corpus(str(b))] == ["2"]


def test_reading_is_lazy(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "1", "text": "ok"}, "{broken"))
    docs = read_corpus([path])
    assert next(docs).id == "1"  # the first document arrives before the bad line is read
    with pytest.raises(CorpusError):
        next(docs)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("x.jsonl", "jsonl"), ("x.JSON", "jsonl"), ("x.jsonl.gz", "jsonl"), ("x.tsv.gz", "tsv"),
     ("x.csv", "csv"), ("x.parquet", "parquet")],
)
def test_detect_format(tmp_path, name, fmt):
    assert detect_format(write(tmp_path / name, "")) == fmt


# ------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError) as info:
        read_corpus([path])  # checked when called, before iteration
    assert_where(info.value, path, None)
    assert "no such file" in str(info.value)


@pytest.mark.parametrize("name", ["c.xml", "c.parquet.gz", "c.txt", "c.gz"])
def test_unknown_format_names_supported_ones(tmp_path, name):
    path = write(tmp_path / name, "x")
    err = corpus_error(path)
    assert_where(err, path, None)
    assert "unknown corpus format" in str(err) and ".jsonl" in str(err) and ".parquet" in str(err)


def test_malformed_json_line(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "1", "text": "ok"}, '{"_id": "2", "text": }'))
    err = corpus_error(path)
    assert_where(err, path, 2)
    assert "malformed JSON (Expecting value" in str(err)


def test_json_array_file_gets_a_hint(tmp_path):
    path = write(tmp_path / "c.json", '[\n{"_id": "1", "text": "x"}\n]\n')
    err = corpus_error(path)
    assert_where(err, path, 1)
    assert "one object per line" in str(err)


def test_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "1", "text": "ok"}, "[1, 2]"))
    err = corpus_error(path)
    assert_where(err, path, 2)
    assert "expected a JSON object, got list" in str(err)


def test_missing_id(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "1", "text": "ok"}, {"title": "t", "text": "x"}))
    err = corpus_error(path)
    assert_where(err, path, 2, "id")
    assert "missing (looked for '_id', 'id', 'docid', 'doc_id')" in str(err)


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"_id": "1", "title": "t"}, "text", "missing (looked for"),
        ({"_id": "1", "title": "t", "text": None}, "text", "missing (null)"),
        ({"_id": "1", "text": ["a"]}, "text", "must be a string, got list"),
        ({"_id": "1", "title": 3, "text": "x"}, "title", "must be a string, got int"),
        ({"_id": ["1"], "text": "x"}, "_id", "must be a string or an integer, got list"),
        ({"_id": True, "text": "x"}, "_id", "must be a string or an integer, got bool"),
        ({"_id": "  ", "text": "x"}, "_id", "empty id"),
    ],
)
def test_bad_record_fields(tmp_path, record, field, message):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "0", "text": "fine"}, record))
    err = corpus_error(path)
    assert_where(err, path, 2, field)
    assert message in str(err)


def test_empty_document_is_kept_with_a_warning(tmp_path, caplog):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "0", "text": "fine"}, {"_id": "1", "title": " ", "text": ""}))
    assert [d.id for d in read(path)] == ["0", "1"]
    assert "c.jsonl:2" in caplog.text and "empty" in caplog.text


def test_empty_text_with_title_is_allowed(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "1", "title": "Only a title", "text": ""}))
    assert read(path) == [Document("1", "Only a title", "")]


@pytest.mark.parametrize("missing", ["pid", "heading", "passage"])
def test_configured_field_missing_is_named(tmp_path, missing):
    record = {"pid": "1", "heading": "h", "passage": "p"}
    del record[missing]
    path = write(tmp_path / "c.jsonl", jsonl(record))
    err = corpus_error(path, fields=FieldNames(id="pid", title="heading", text="passage"))
    assert_where(err, path, 1, missing)
    assert "missing" in str(err)


@pytest.mark.parametrize(
    ("name", "head"),
    [("c.jsonl", b'{"_id": "1", "text": "a"}\n\n'), ("c.jsonl.gz", b'{"_id": "1", "text": "a"}\n\n'),
     ("c.tsv", b"id\ttext\n1\ta\n"), ("c.csv", b"id,text\n1,a\n")],
)
def test_invalid_utf8_reports_the_line(tmp_path, name, head):
    bad = b'{"_id": "2", "text": "caf\xe9"}\n' if "json" in name else b"2\tcaf\xe9\n".replace(b"\t", b"," if "csv" in name else b"\t")
    path = write(tmp_path / name, head + bad)
    err = corpus_error(path)
    assert_where(err, path, 3)
    assert "invalid UTF-8" in str(err)


def test_invalid_utf8_in_text_folder(tmp_path):
    path = write(tmp_path / "d" / "x.txt", b"ok\nfine\nbad \xff byte\n")
    err = corpus_error(tmp_path / "d")
    assert_where(err, path, 3)
    assert "invalid UTF-8" in str(err)


def test_utf8_bom_is_ignored(tmp_path):
    path = write(tmp_path / "c.csv", "\ufeffid,text\n1,x\n")
    assert read(path)[0].id == "1"


def test_empty_corpus_names_all_paths(tmp_path):
    a = write(tmp_path / "a.jsonl", "\n\n")
    b = write(tmp_path / "b.csv", "id,text\n")
    err = corpus_error(a, b)
    assert str(err) == f"{a}, {b}: empty corpus"


def test_no_paths():
    with pytest.raises(CorpusError, match="no corpus paths"):
        read_corpus([])


def test_folder_without_corpus_or_text_files(tmp_path):
    folder = tmp_path / "empty"
    write(folder / "data.bin", b"\x00")
    err = corpus_error(folder)
    assert_where(err, folder, None)
    assert "neither a BEIR dataset" in str(err) and ".txt/.md" in str(err)


def test_tsv_row_with_wrong_column_count(tmp_path):
    path = write(tmp_path / "c.tsv", "id\ttitle\ttext\n1\tt\tx\n2\tonly two\n")
    err = corpus_error(path)
    assert_where(err, path, 3)
    assert "expected 3 columns, found 2" in str(err)


def test_headerless_tsv_with_too_many_columns(tmp_path):
    path = write(tmp_path / "c.tsv", "1\ta\tb\tc\n")
    err = corpus_error(path)
    assert_where(err, path, 1)
    assert "headerless TSV needs 2" in str(err)


def test_csv_without_id_column(tmp_path):
    path = write(tmp_path / "c.csv", "name,text\nx,y\n")
    assert_where(corpus_error(path), path, 2, "id")


@pytest.mark.parametrize("bad", ['2,"unterminated\nmore\n', '2,"closed"then text\n'])
def test_malformed_csv(tmp_path, bad):
    path = write(tmp_path / "c.csv", "id,text\n1,ok\n" + bad)
    err = corpus_error(path)
    assert_where(err, path, 3)  # the line where the bad record starts
    assert "malformed CSV record" in str(err)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"this is not gzip data")
    err = corpus_error(path)
    assert err.path == str(path) and "cannot read" in str(err)


def test_corrupt_parquet(tmp_path):
    path = write(tmp_path / "c.parquet", b"not parquet at all")
    err = corpus_error(path)
    assert err.path == str(path) and "cannot read Parquet" in str(err)


def test_parquet_missing_text_names_row_and_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", None]}), path)
    assert_where(corpus_error(path), path, 2, "text")


# ------------------------------------------------------------------------- a real corpus


def test_scifact_corpus():
    docs = read(shared_dataset("scifact") / "corpus.jsonl")  # ../shared/data next to the repo, or $RETRIEVER_DATA
    assert len(docs) == 5183
    assert len({d.id for d in docs}) == 5183
    assert all(d.text or d.title for d in docs)
