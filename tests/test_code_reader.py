"""Source trees as corpora (ids, spans, titles, unparsable files) and the identifier-splitting preprocessor."""

from __future__ import annotations

import logging

import pytest

from indexing.code_reader import function_documents, python_functions, read_code_corpus, source_lines
from indexing.errors import CorpusError
from retriever.encoders.code.identifiers import preprocess_code, split_identifier

MODULE = '''import functools


class Thermostat:
    """Keeps a room warm."""

    @property
    def target(self):
        """The wanted temperature."""
        return self._target

    @target.setter
    def target(self, degrees):
        self._target = degrees

    async def wait_until_warm(self, room, *, poll: float = 1.0) -> bool:
        def is_warm():
            return room.temperature >= self._target
        return is_warm()


@functools.cache
def parseHTTPResponse(raw_bytes):
    """Split a raw HTTP response into headers and body.

    Long explanation that is not part of the title.
    """
    head, _, body = raw_bytes.partition(b"\\r\\n\\r\\n")
    return head, body
'''


def test_functions_get_unique_ids_spans_and_titles():
    docs = function_documents("src/heat.py", MODULE)
    assert [d.id for d in docs] == [
        "src/heat.py:Thermostat.target:8",
        "src/heat.py:Thermostat.target:13",  # the setter shares the getter's qualname; the line tells them apart
        "src/heat.py:Thermostat.wait_until_warm:16",
        "src/heat.py:Thermostat.wait_until_warm.<locals>.is_warm:17",
        "src/heat.py:parseHTTPResponse:23",
    ]
    getter, setter, waiter, inner, parser = docs
    assert getter.metadata == {"path": "src/heat.py", "qualname": "Thermostat.target", "language": "python",
                               "start_line": 7, "end_line": 10}  # the span starts at the decorator
    assert getter.text.startswith("@property\ndef target(self):\n") and setter.text.startswith("@target.setter\n")
    assert getter.title == "def target(self): The wanted temperature."
    assert waiter.title == "async def wait_until_warm(self, room, *, poll: float=1.0) -> bool"
    assert inner.text == "def is_warm():\n    return room.temperature >= self._target\n"
    assert parser.title == "def parseHTTPResponse(raw_bytes): Split a raw HTTP response into headers and body."
    lines = MODULE.splitlines()
    for doc in docs:  # the span points at the source as written
        start, end = doc.metadata["start_line"], doc.metadata["end_line"]
        assert doc.text.strip().splitlines()[-1].strip() == lines[end - 1].strip()
        assert doc.text.splitlines()[0].strip() == lines[start - 1].strip()


def test_line_numbers_count_only_real_line_ends():
    source = "x = 1\n\x0c\ndef f():\n    return 1\n"  # a form feed is not a line end for Python
    assert len(source_lines(source)) == 4
    assert python_functions(source)[0].def_line == 3


def test_python2_file_is_indexed_as_text_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        docs = function_documents("old.py", 'print "hi"\n')
    assert [(d.id, d.text, d.metadata["language"]) for d in docs] == [("old.py", 'print "hi"\n', "text")]
    assert "old.py:1: does not parse as Python 3" in caplog.text


def test_read_code_corpus_mixes_trees_and_corpus_files(tmp_path):
    (tmp_path / "src" / ".hidden").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "src" / ".hidden" / "b.py").write_text("def g():\n    pass\n")
    (tmp_path / "docs.jsonl").write_text('{"_id": "d1", "text": "plain text"}\n')
    ids = [d.id for d in read_code_corpus([tmp_path / "src", tmp_path / "docs.jsonl"])]
    assert ids == ["a.py:f:1", "d1"]
    with pytest.raises(CorpusError, match="no such file"):
        read_code_corpus([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no source files"):
        list(read_code_corpus([tmp_path / "empty"]))


def test_javascript_through_tree_sitter(tmp_path):
    pytest.importorskip("tree_sitter_javascript")
    (tmp_path / "a.js").write_text("class A {\n  /** the x value */\n  get x() { return 1 }\n  set x(v) { this._x = v }\n}\n"
                                   "// adds two numbers\nfunction add(a, b) { return a + b }\nconst twice = (x) => x * 2;\n")
    docs = list(read_code_corpus([tmp_path]))
    assert [d.id for d in docs] == ["a.js:A.x:3", "a.js:A.x:4", "a.js:add:7", "a.js:twice:8"]
    assert docs[0].title == "get x(): the x value" and docs[2].title == "function add(a, b): adds two numbers"
    assert docs[3].title == "twice = (x)" and docs[3].metadata["language"] == "javascript"


@pytest.mark.parametrize("name, words", [
    ("parseHTTPResponse2_code", ["parse", "http", "response", "2", "code"]),
    ("snake_case_name", ["snake", "case", "name"]),
    ("XMLHttpRequest", ["xml", "http", "request"]),
    ("__init__", ["init"]),
    ("getURL", ["get", "url"]),
    ("x", ["x"]),
])
def test_split_identifier(name, words):
    assert split_identifier(name) == words


def test_preprocessing_keeps_the_raw_code_next_to_the_words():
    code = "def readFile(file_path):\n    return open(file_path).read()"
    assert preprocess_code(code) == ("def readFile read file(file_path file path):\n"
                                     "    return open(file_path file path).read()")
    assert preprocess_code("how to read a file in Python") == "how to read a file in Python"
