"""Reading URL lists for the ``url`` preset: one URL per line, or records with a ``url`` field.

Accepted inputs (each optionally ``.gz``):

- a plain list (``.txt``, ``.urls``, ``.lst`` or any other unknown suffix): one URL per line, blank lines
  skipped; the id is ``<file name>:<line>``;
- ``.tsv``/``.csv`` with a header row naming a ``url`` column (``text_field`` overrides the name);
- ``.jsonl``/``.json`` with one object per line holding a ``url`` field.

In records, an ``id``-like column (``_id``, ``id``, ``docid``, ``doc_id``) gives the id, else ``<file name>:<line>``;
every other field (``label``, ...) is kept as metadata. The document's text is the URL as written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexing.documents import Document
from indexing.errors import CorpusError
from indexing.formats.jsonl import read_jsonl
from indexing.formats.lines import read_lines
from indexing.readers import ID_KEYS, _raise_csv_field_limit

URL_KEY = "url"


def _kind_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        raise CorpusError(path, "URL lists are read from text, TSV, CSV or JSONL files (not Parquet)")
    return "lines"


def read_urls(paths: Sequence[Path | str], *, url_field: str | None = None, id_field: str | None = None) -> Iterator[Document]:
    """Stream URL documents from ``paths`` (checked for existence now; read lazily).

    Raises:
        CorpusError: a missing file or folder, a record without its URL field (naming file, line and field),
            or no URL at all.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise CorpusError("(no paths)", "no URL files given")
    for path in paths:
        if not path.is_file():
            raise CorpusError(path, "no such file" if not path.exists() else "expected a file of URLs, got a folder")
        if _kind_of(path) in ("tsv", "csv"):
            next(_table_records(path, _kind_of(path), url_field or URL_KEY), None)  # the header is checked now
    return _read_all(paths, url_field or URL_KEY, id_field)


def _read_all(paths: list[Path], url_field: str, id_field: str | None) -> Iterator[Document]:
    count = 0
    for path in paths:
        kind = _kind_of(path)
        if kind == "lines":
            records = _lines_records(path)
        else:
            records = read_jsonl(path) if kind == "jsonl" else _table_records(path, kind, url_field)
        for line, record in records:
            count += 1
            yield _document(record, path, line, url_field, id_field, plain=kind == "lines")
    if count == 0:
        raise CorpusError(", ".join(str(p) for p in paths), "no URL found")


def _document(record: dict, path: Path, line: int, url_field: str, id_field: str | None, *, plain: bool) -> Document:
    url = record.get(url_field)
    if url is None:
        raise CorpusError(path, "missing" if url_field not in record else "missing (null)", line=line, field=url_field)
    if not isinstance(url, str):
        raise CorpusError(path, f"must be a string, got {type(url).__name__}", line=line, field=url_field)
    id_key = id_field if id_field is not None else next((k for k in ID_KEYS if k in record), None)
    if id_field is not None and id_field not in record:
        raise CorpusError(path, "missing", line=line, field=id_field)
    doc_id = record[id_key] if id_key is not None else f"{path.name}:{line}"
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or not str(doc_id).strip():
        raise CorpusError(path, "must be a non-empty string or an integer", line=line, field=id_key)
    metadata = {} if plain else {k: v for k, v in record.items() if k not in (url_field, id_key)}
    return Document(id=str(doc_id), title="", text=url, metadata=metadata, origin=f"{path}:{line}")


def _lines_records(path: Path) -> Iterator[tuple[int, dict]]:
    for line, text in read_lines(path):
        url = text.strip()
        if url:
            yield line, {URL_KEY: url}


def _table_records(path: Path, kind: str, url_field: str) -> Iterator[tuple[int, dict]]:
    """TSV (cells verbatim, no quoting) or CSV (quoted cells) with a header row."""
    header: list[str] | None = None
    if kind == "csv":
        _raise_csv_field_limit()
        reader = csv.reader((text for _, text in read_lines(path)), strict=True)
        rows = ((reader.line_num, row) for row in reader)
    else:
        rows = ((line, text.rstrip("\r\n").split("\t")) for line, text in read_lines(path) if text.strip())
    try:
        for line, cells in rows:
            if not cells:
                continue
            if header is None:
                if url_field not in cells:
                    raise CorpusError(path, f"the header row has no {url_field!r} column (columns: {', '.join(cells)})", line=line)
                header = cells
                continue
            if len(cells) != len(header):
                raise CorpusError(path, f"expected {len(header)} columns, found {len(cells)}", line=line)
            yield line, dict(zip(header, cells))
    except csv.Error as exc:
        raise CorpusError(path, f"malformed CSV record ({exc})") from None
