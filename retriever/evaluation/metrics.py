"""Evaluation: BEIR queries/qrels readers, ir-measures metrics, TREC runs, significance tests, coverage.

Every metric is computed by ``ir_measures`` (pytrec_eval underneath); nothing here re-implements one.
Scoring is judged-only: queries without qrels are ignored (and counted), and judged queries the run has
no results for score 0, as with ``trec_eval -c`` (the way Pyserini's published BEIR numbers are made).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexing.errors import CorpusError, RetrieverError
from retriever.hits import Hits

logger = logging.getLogger(__name__)

METRIC_EXAMPLES = ("nDCG@10", "R@100", "MRR@10", "RR@10", "AP", "P@5", "R@1000", "Judged@10")
# Spellings people use that ir_measures does not know, lower-cased -> ir_measures measure name.
_ALIASES = {"mrr": "RR", "rr": "RR", "ndcg": "nDCG", "recall": "R", "r": "R", "map": "AP", "ap": "AP",
            "p": "P", "precision": "P", "success": "Success", "judged": "Judged"}
_EXAMPLES_SHOWN = 5


def _open_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file, raising CorpusError when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "no such file")
    try:
        with path.open(encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        raise CorpusError(path, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise CorpusError(path, f"cannot read: {exc.strerror or exc}") from exc


def load_queries(path: Path) -> dict[str, str]:
    """Read BEIR ``queries.jsonl``: one ``{"_id": ..., "text": ...}`` object a line (blank lines skipped).

    Integer ids are accepted and turned into strings. Raises CorpusError naming file, line and field on
    bad JSON, a missing/invalid ``_id`` or ``text``, or a duplicated id.
    """
    queries: dict[str, str] = {}
    for number, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(path, f"invalid JSON ({exc.msg})", line=number) from exc
        if not isinstance(record, dict):
            raise CorpusError(path, "expected a JSON object", line=number)
        query_id = record.get("_id")
        if isinstance(query_id, int) and not isinstance(query_id, bool):
            query_id = str(query_id)
        if not isinstance(query_id, str) or not query_id:
            raise CorpusError(path, "missing" if query_id is None else "must be a non-empty string",
                              line=number, field="_id")
        text = record.get("text")
        if not isinstance(text, str):
            raise CorpusError(path, "missing" if text is None else "must be a string", line=number, field="text")
        if query_id in queries:
            raise CorpusError(path, f"duplicate query id {query_id!r}", line=number, field="_id")
        queries[query_id] = text
    logger.debug("read %d queries from %s", len(queries), path)
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read relevance judgments: BEIR TSV (``query-id corpus-id score``, header optional) or TREC qrels
    (``query-id iteration corpus-id score``, whitespace separated). Returns ``{query_id: {doc_id: score}}``.

    Raises CorpusError naming file and line on a malformed line or a non-integer score.
    """
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for number, line in _open_lines(path):
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split())]
        if not any(fields):
            continue
        if len(fields) == 3:
            query_id, doc_id, score_text = fields
        elif len(fields) == 4:
            query_id, _, doc_id, score_text = fields
        else:
            raise CorpusError(path, f"expected 3 (BEIR) or 4 (TREC) columns, got {len(fields)}", line=number)
        is_first, first = first, False
        try:
            score = _parse_int(score_text)
        except ValueError as exc:
            if is_first:  # a header such as "query-id corpus-id score"
                continue
            raise CorpusError(path, f"not an integer: {score_text!r}", line=number, field="score") from exc
        if not query_id or not doc_id:
            raise CorpusError(path, "empty query or document id", line=number)
        qrels.setdefault(query_id, {})[doc_id] = score
    logger.debug("read qrels of %d queries from %s", len(qrels), path)
    return qrels


def _parse_int(text: str) -> int:
    """An integer relevance, also written as ``"1.0"``; raises ValueError otherwise."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise
        return int(value)


def parse_metrics(names: Sequence[str]) -> list:
    """Turn metric names into ir_measures measures (duplicates dropped, order kept).

    Accepts any ir_measures name (``nDCG@10``, ``R@100``, ``RR@10``, ``AP``, ``P@5``, ``RR(rel=2)@10``...),
    case-insensitive common spellings (``ndcg@10``, ``MRR@10`` = ``RR@10``, ``Recall@100``, ``MAP``) and
    trec_eval names (``ndcg_cut.10``). Raises RetrieverError, with examples, on an unknown name.
    """
    import ir_measures

    measures: list = []
    for name in names:
        parsed = _parse_one(ir_measures, name.strip())
        for measure in parsed:
            if measure not in measures:
                measures.append(measure)
    if not measures:
        raise RetrieverError(f"no metric given; examples: {', '.join(METRIC_EXAMPLES)}")
    return measures


def _parse_one(ir_measures: Any, name: str) -> list:
    """Parse one metric name (see :func:`parse_metrics`)."""
    attempts = [name]
    match = re.match(r"([A-Za-z_]+)(.*)$", name)
    if match and match.group(1).lower() in _ALIASES:
        attempts.append(_ALIASES[match.group(1).lower()] + match.group(2))
    for attempt in attempts:
        try:
            return [ir_measures.parse_measure(attempt)]
        except Exception:  # ir_measures raises NameError/ValueError/SyntaxError for unknown names
            continue
    try:
        return list(ir_measures.parse_trec_measure(name))
    except Exception:
        pass
    raise RetrieverError(f"unknown metric {name!r}; examples: {', '.join(METRIC_EXAMPLES)} "
                         "(any ir_measures name works, see https://ir-measur.es)")


@dataclass
class EvalResult:
    """Scores of one run.

    Attributes:
        aggregate: ``{metric: value}`` over the judged queries, metric as printed by ir_measures.
        per_query: ``{query_id: {metric: value}}`` for every judged query.
        labels: ``{metric: the user's spelling}`` for display (``"RR@10" -> "MRR@10"``).
        unjudged_queries: queries of the run that have no qrels (ignored).
        missing_queries: judged queries with no results in the run (scored 0, like ``trec_eval -c``).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    labels: dict[str, str] = field(default_factory=dict)
    unjudged_queries: int = 0
    missing_queries: int = 0


def _as_scores(results: Hits | Mapping[str, float]) -> dict[str, float]:
    """One query's results as ``{doc_id: score}`` (a duplicated id keeps its first, best-ranked score)."""
    if isinstance(results, Hits):
        scores: dict[str, float] = {}
        for doc_id, score in zip(results.ids, np.asarray(results.scores, dtype=np.float64).tolist()):
            scores.setdefault(doc_id, score)
        return scores
    return {str(doc_id): float(score) for doc_id, score in results.items()}


def evaluate(
    run: Mapping[str, Hits] | Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[Any],
) -> EvalResult:
    """Score a run against qrels with ir_measures.

    Args:
        run: ``{query_id: Hits}`` or ``{query_id: {doc_id: score}}``. Ranking follows the scores
            (ties ordered as trec_eval does), as in every standard evaluation tool.
        qrels: ``{query_id: {doc_id: relevance}}``.
        metrics: measure objects or names (names go through :func:`parse_metrics`).

    Returns:
        Aggregates and per-query values over the judged queries (see :class:`EvalResult`).
    """
    import ir_measures

    labels: dict[str, str] = {}
    measures: list = []
    for metric in metrics:
        parsed = parse_metrics([metric]) if isinstance(metric, str) else [metric]
        for measure in parsed:
            if measure not in measures:
                measures.append(measure)
                labels[str(measure)] = metric if isinstance(metric, str) and len(parsed) == 1 else str(measure)
    judged = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    unjudged = sum(1 for query_id in run if query_id not in judged)
    if unjudged:
        logger.info("%d run queries have no qrels and are ignored", unjudged)
    scored = {query_id: _as_scores(results) for query_id, results in run.items() if query_id in judged}
    missing = 0
    for query_id in judged:
        if not scored.get(query_id):
            missing += 1
            scored[query_id] = {}  # ir_measures scores an empty result list as 0
    if missing:
        logger.warning("%d judged queries have no results in the run; they score 0", missing)
    if not judged:
        raise RetrieverError("the qrels hold no judgments: nothing to evaluate")
    aggregate_raw, per_query_raw = ir_measures.calc(measures, judged, scored)
    aggregate = {str(measure): float(value) for measure, value in aggregate_raw.items()}
    per_query: dict[str, dict[str, float]] = {query_id: {} for query_id in judged}
    for metric in per_query_raw:
        per_query.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    ordered = {str(m): aggregate[str(m)] for m in measures if str(m) in aggregate}
    return EvalResult(aggregate=ordered, per_query=per_query, labels=labels,
                      unjudged_queries=unjudged, missing_queries=missing)


def write_trec_run(run: Mapping[str, Hits], path: Path, *, tag: str) -> None:
    """Write a TREC run file (``qid Q0 docid rank score tag``, rank from 1), atomically (temp + rename).

    Scores are written with 9 significant digits, enough to read float32 back exactly.
    Raises ValueError if the tag or an id is empty or contains whitespace (the format cannot hold it).
    """
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"run tag must be non-empty without whitespace, got {tag!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for query_id, hits in run.items():
                for rank, (doc_id, score) in enumerate(zip(hits.ids, np.asarray(hits.scores).tolist()), start=1):
                    for value in (query_id, doc_id):
                        if not value or any(ch.isspace() for ch in value):
                            raise ValueError(f"id {value!r} cannot be written to a TREC run (empty or whitespace)")
                    handle.write(f"{query_id} Q0 {doc_id} {rank} {format(float(score), '.9g')} {tag}\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote run of %d queries to %s", len(run), path)


def paired_pvalue(
    per_query_a: Mapping[str, float],
    per_query_b: Mapping[str, float],
    *,
    method: Literal["ttest", "randomization"] = "ttest",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of a paired test between two systems' per-query values of one metric.

    Uses the queries both systems have. ``"ttest"``: ``scipy.stats.ttest_rel``; ``"randomization"``:
    ``scipy.stats.permutation_test`` with paired (sign-flip) permutations of the mean difference.
    Identical values on every query give 1.0. Raises RetrieverError with fewer than 2 common queries
    and ValueError on an unknown method.
    """
    from scipy import stats

    common = sorted(per_query_a.keys() & per_query_b.keys())
    only = len(per_query_a.keys() ^ per_query_b.keys())
    if only:
        logger.warning("%d queries are scored by only one system; the test uses the %d common ones", only, len(common))
    if len(common) < 2:
        raise RetrieverError(f"a paired test needs at least 2 common queries, got {len(common)}")
    a = np.asarray([per_query_a[q] for q in common], dtype=np.float64)
    b = np.asarray([per_query_b[q] for q in common], dtype=np.float64)
    if np.allclose(a, b, rtol=0.0, atol=1e-12):
        return 1.0
    if method == "ttest":
        pvalue = float(stats.ttest_rel(a, b).pvalue)
        return 0.0 if np.isnan(pvalue) else pvalue  # constant non-zero difference: t is infinite
    if method == "randomization":
        result = stats.permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
            random_state=np.random.default_rng(seed),
        )
        return float(result.pvalue)
    raise ValueError(f"unknown method {method!r}: use 'ttest' or 'randomization'")


def coverage_report(
    qrels: Mapping[str, Mapping[str, int]],
    query_ids: set[str],
    doc_ids: Callable[[Iterable[str]], set[str]] | set[str],
) -> dict:
    """Check that the qrels fit the queries and the index.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        query_ids: ids of the queries that have a text.
        doc_ids: the index's document ids, or a function returning which of the given ids it holds.

    Returns:
        ``{"qrels_queries", "queries_without_text", "queries_without_text_examples", "qrels_documents",
        "documents_not_in_index", "documents_not_in_index_examples", "judgments",
        "judgments_to_missing_documents"}`` (counts, and up to 5 sorted example ids).
    """
    judged_docs = {doc_id for docs in qrels.values() for doc_id in docs}
    present = doc_ids(judged_docs) if callable(doc_ids) else judged_docs & doc_ids
    missing_docs = judged_docs - set(present)
    missing_queries = sorted(q for q in qrels if q not in query_ids)
    report = {
        "qrels_queries": len(qrels),
        "queries_without_text": len(missing_queries),
        "queries_without_text_examples": missing_queries[:_EXAMPLES_SHOWN],
        "qrels_documents": len(judged_docs),
        "documents_not_in_index": len(missing_docs),
        "documents_not_in_index_examples": sorted(missing_docs)[:_EXAMPLES_SHOWN],
        "judgments": sum(len(docs) for docs in qrels.values()),
        "judgments_to_missing_documents": sum(1 for docs in qrels.values() for d in docs if d in missing_docs),
    }
    if missing_queries or missing_docs:
        logger.warning("qrels coverage: %d queries without text, %d judged documents not in the index",
                       len(missing_queries), len(missing_docs))
    return report
