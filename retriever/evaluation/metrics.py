"""Evaluation: ir-measures metrics, significance tests, qrels coverage.

Query files, qrels and TREC runs are read and written by :mod:`indexing.formats.queries` and
:mod:`indexing.formats.trec`.

Every metric is computed by ``ir_measures`` (pytrec_eval underneath); nothing here re-implements one.
Scoring is judged-only: queries without qrels are ignored (and counted), and judged queries the run has
no results for score 0, as with ``trec_eval -c`` (the way Pyserini's published BEIR numbers are made).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from indexing.errors import RetrieverError
from retriever.hits import Hits

logger = logging.getLogger(__name__)

METRIC_EXAMPLES = ("nDCG@10", "R@100", "MRR@10", "RR@10", "AP", "P@5", "R@1000", "Judged@10")
# Spellings people use that ir_measures does not know, lower-cased -> ir_measures measure name.
_ALIASES = {"mrr": "RR", "rr": "RR", "ndcg": "nDCG", "recall": "R", "r": "R", "map": "AP", "ap": "AP",
            "p": "P", "precision": "P", "success": "Success", "judged": "Judged"}
_EXAMPLES_SHOWN = 5


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
