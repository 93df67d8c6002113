"""TREC runs and relevance judgments (qrels): the one writer and reader of each.

- Run: ``query-id Q0 doc-id rank score tag`` a line, whitespace separated, rank from 1, best first. Scores are
  written with 9 significant digits, enough to read a float32 back exactly.
- Qrels: BEIR TSV ``query-id<TAB>corpus-id<TAB>score`` (header row optional) or TREC
  ``query-id iteration doc-id relevance`` (whitespace separated). Relevance is an integer (``1.0`` accepted).

Files ending in ``.gz`` are read and written through gzip.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from indexing.errors import CorpusError
from indexing.formats.lines import read_lines, write_lines

Ranking = tuple[Sequence[str], Sequence[float]]
"""One query's results: document ids best first and their scores (``retriever.hits.Hits`` is one)."""

RUN_COLUMNS = "query-id Q0 doc-id rank score tag"


def write_run(path: Path | str, run: Mapping[str, Ranking], *, tag: str) -> int:
    """Write ``{query id: (doc ids, scores)}`` as a TREC run, atomically (``path`` is whole or untouched).

    Ranks are the list positions from 1. Returns the number of lines written.

    Raises:
        ValueError: the tag or an id is empty or holds whitespace (the format cannot hold it), or a query's ids
            and scores differ in length; ``path`` is then untouched.
    """
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"run tag must be non-empty without whitespace, got {tag!r}")
    return write_lines(path, _run_lines(run, tag))


def _run_lines(run: Mapping[str, Ranking], tag: str) -> Iterator[str]:
    for query_id, (doc_ids, scores) in run.items():
        if len(doc_ids) != len(scores):
            raise ValueError(f"query {query_id!r}: {len(doc_ids)} ids but {len(scores)} scores")
        for rank, (doc_id, score) in enumerate(zip(doc_ids, scores), start=1):
            for value in (query_id, doc_id):
                if not value or any(ch.isspace() for ch in value):
                    raise ValueError(f"id {value!r} cannot be written to a TREC run (empty or whitespace)")
            yield f"{query_id} Q0 {doc_id} {rank} {format(float(score), '.9g')} {tag}\n"


def read_run(path: Path | str) -> dict[str, dict[str, float]]:
    """``{query id: {doc id: score}}`` of a TREC run, each query's documents in rank order (best first).

    Raises:
        CorpusError: naming file and line: not 6 columns, a rank that is not a positive integer, a score that is
            not a number, a document listed twice for one query; or the file is missing or unreadable.
    """
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for number, line in read_lines(path):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 6:
            raise CorpusError(path, f"expected 6 columns ({RUN_COLUMNS}), got {len(cells)}", line=number)
        query_id, _, doc_id, rank_text, score_text, _ = cells
        rank = _positive_int(path, rank_text, number)
        try:
            score = float(score_text)
        except ValueError:
            raise CorpusError(path, f"not a number: {score_text!r}", line=number, field="score") from None
        if (query_id, doc_id) in seen:
            raise CorpusError(path, f"document {doc_id!r} listed twice for query {query_id!r}", line=number)
        seen.add((query_id, doc_id))
        ranked.setdefault(query_id, []).append((rank, doc_id, score))
    return {query_id: {doc_id: score for _, doc_id, score in sorted(rows, key=lambda row: row[0])}
            for query_id, rows in ranked.items()}


def _positive_int(path: Path | str, text: str, number: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CorpusError(path, f"not a positive integer: {text!r}", line=number, field="rank")
    return value


def read_qrels(path: Path | str) -> dict[str, dict[str, int]]:
    """``{query id: {doc id: relevance}}`` of BEIR TSV qrels (``query-id corpus-id score``, header optional) or
    TREC qrels (``query-id iteration doc-id relevance``). A query or document judged twice keeps the last line.

    Raises:
        CorpusError: naming file and line: not 3 or 4 columns, a relevance that is not an integer (field
            ``score``), an empty id; or the file is missing or unreadable.
    """
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for number, line in read_lines(path):
        cells = [cell.strip() for cell in (line.split("\t") if "\t" in line else line.split())]
        if not any(cells):
            continue
        if len(cells) == 3:
            query_id, doc_id, score_text = cells
        elif len(cells) == 4:
            query_id, _, doc_id, score_text = cells
        else:
            raise CorpusError(path, f"expected 3 (BEIR) or 4 (TREC) columns, got {len(cells)}", line=number)
        is_first, first = first, False
        try:
            score = _relevance(score_text)
        except ValueError:
            if is_first:  # a header such as "query-id corpus-id score"
                continue
            raise CorpusError(path, f"not an integer: {score_text!r}", line=number, field="score") from None
        if not query_id or not doc_id:
            raise CorpusError(path, "empty query or document id", line=number)
        qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def _relevance(text: str) -> int:
    """An integer relevance, also written as ``"1.0"``; raises ValueError otherwise."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise
        return int(value)
