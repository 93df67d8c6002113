"""JSON lines: one JSON object a line (``.jsonl``/``.json``, optionally ``.gz``), read and written the same way
everywhere (corpora, queries, training pairs, SQL pools, per-query metrics).

Reading: gzip by suffix, UTF-8 with an optional byte-order mark, blank lines skipped, and a line that is not a
JSON object is a :class:`CorpusError` naming file and line (``pairs.jsonl:7: malformed JSON (...)``).
Writing: atomic (temporary file + rename), UTF-8 kept as is (``ensure_ascii=False``), one object a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from indexing.errors import CorpusError
from indexing.formats.lines import read_lines, write_lines

SUFFIXES = (".jsonl", ".json")
"""Suffixes of JSON lines files (each may be followed by ``.gz``)."""


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number from 1, record)`` for every non-blank line of a JSON lines file.

    Raises:
        CorpusError: the file is missing or unreadable (see :func:`indexing.formats.lines.read_lines`), or a line
            is not valid JSON or not a JSON object (naming file and line; a JSON array file gets a hint).
    """
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = "; a JSON array is not supported, write one object per line" if line.lstrip().startswith("[") else ""
            raise CorpusError(path, f"malformed JSON ({exc.msg}, column {exc.colno}){hint}", line=number) from None
        if not isinstance(record, dict):
            raise CorpusError(path, f"expected a JSON object, got {kind(record)}", line=number)
        yield number, record


def load_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every record of a JSON lines file, in file order (:func:`read_jsonl` without line numbers).

    Raises:
        CorpusError: as :func:`read_jsonl`.
    """
    return [record for _, record in read_jsonl(path)]


def write_jsonl(path: Path | str, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` one JSON object a line, atomically (``path`` is whole or untouched); ``.gz`` compresses.

    ``records`` may be a generator. Returns the number of records written.

    Raises:
        TypeError: a record holds a value JSON cannot represent (``path`` is then untouched).
    """
    return write_lines(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def kind(value: Any) -> str:
    """The JSON-ish name of a value's type for messages: ``null``, ``list``, ``str``, ``int``..."""
    return "null" if value is None else type(value).__name__
