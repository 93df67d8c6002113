"""Query files: JSON lines (``{"_id" or "id": ..., "text": ...}``) or TSV (``id<TAB>text``), optionally ``.gz``.

The one reader of queries for ``retriever search --queries``, ``retriever eval`` (a BEIR folder's
``queries.jsonl``), training (BEIR pairs, evaluation during training) and the benchmarks.

- JSONL (``.jsonl``/``.json``): the id is ``_id``, else ``id`` (a string, or an integer made a string); the text
  is ``text``; other fields are ignored.
- TSV (``.tsv``): ``id<TAB>text`` a line, cells verbatim (no quoting); the text is everything after the first tab.
  A first row whose first cell is a column name (``id``, ``_id``, ``qid``, ``query_id``, ``query-id``) is a header.

Blank lines are skipped. A blank query (only whitespace, U+FEFF included) or a duplicated id is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indexing.errors import CorpusError
from indexing.formats.jsonl import SUFFIXES as JSONL_SUFFIXES
from indexing.formats.jsonl import kind, read_jsonl
from indexing.formats.lines import read_lines

ID_KEYS = ("_id", "id")
TEXT_KEY = "text"
TSV_HEADER_IDS = ("id", "_id", "qid", "query_id", "query-id")
FORMATS = ".jsonl/.json (_id or id, text) or .tsv (id<TAB>text), each optionally .gz"


def is_blank(text: str) -> bool:
    """Whether ``text`` holds only whitespace (Python's, plus U+FEFF as ECMAScript counts it): a blank query."""
    return not text.replace("\ufeff", "").strip()


def query_format(path: Path | str) -> str:
    """``"jsonl"`` or ``"tsv"`` from the file name (a ``.gz`` suffix is looked through).

    Raises:
        CorpusError: any other suffix (names the supported ones).
    """
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    raise CorpusError(path, f"unknown queries format; use {FORMATS}")


def read_queries(path: Path | str) -> dict[str, str]:
    """``{query id: text}`` of a query file, in file order.

    Raises:
        CorpusError: naming file, line and field: unknown format, missing file, malformed JSON, a missing or
            mistyped id or text, a TSV line without a tab, an empty id, a blank query, a duplicated id.
    """
    rows = _jsonl_rows(path) if query_format(path) == "jsonl" else _tsv_rows(path)
    queries: dict[str, str] = {}
    for number, query_id, text, id_field in rows:
        if query_id in queries:
            raise CorpusError(path, f"duplicate query id {query_id!r}", line=number, field=id_field)
        if is_blank(text):
            raise CorpusError(path, f"query {query_id!r} is blank: give some text to search for", line=number)
        queries[query_id] = text
    return queries


def _jsonl_rows(path: Path | str):
    """Yield ``(line, id, text, id field)`` of a JSONL query file."""
    for number, record in read_jsonl(path):
        id_field = next((key for key in ID_KEYS if key in record), ID_KEYS[0])
        query_id = _query_id(path, record.get(id_field), number, id_field)
        text = record.get(TEXT_KEY)
        if not isinstance(text, str):
            message = "missing" if text is None else f"must be a string, got {kind(text)}"
            raise CorpusError(path, message, line=number, field=TEXT_KEY)
        yield number, query_id, text, id_field


def _query_id(path: Path | str, value: Any, number: int, id_field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise CorpusError(path, f"missing (looked for {', '.join(repr(k) for k in ID_KEYS)})", line=number, field=id_field)
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(path, f"must be a non-empty string or an integer, got {value!r}", line=number, field=id_field)
    return value


def _tsv_rows(path: Path | str):
    """Yield ``(line, id, text, "id")`` of a TSV query file (``id<TAB>text``, optional header row)."""
    first = True
    for number, line in read_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        query_id, tab, text = line.partition("\t")
        if first and query_id.strip().lower() in TSV_HEADER_IDS:
            first = False
            continue
        first = False
        if not tab:
            raise CorpusError(path, "expected id<TAB>text (no tab on this line)", line=number)
        if not query_id.strip():
            raise CorpusError(path, "empty query id", line=number, field="id")
        yield number, query_id, text, "id"
