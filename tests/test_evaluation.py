"""Evaluation helpers: ir-measures metrics checked against hand computations, significance tests, coverage.

Query, qrels and run files are tested in tests/test_formats.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indexing.errors import RetrieverError
from retriever.evaluation.metrics import (
    coverage_report,
    evaluate,
    paired_pvalue,
    parse_metrics,
)
from retriever.hits import Hits

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d5": 1}, "q4": {"d9": 1}}


def hits(ids: list[str], scores: list[float]) -> Hits:
    """Hits from plain lists."""
    return Hits(ids, np.asarray(scores, dtype=np.float32))


def test_parse_metrics() -> None:
    names = [str(m) for m in parse_metrics(["nDCG@10", "MRR@10", "R@100", "recall@5", "ndcg@10", "RR@10", "AP"])]
    assert names == ["nDCG@10", "RR@10", "R@100", "R@5", "AP"]
    with pytest.raises(RetrieverError, match="nDCG@10"):
        parse_metrics(["bogus@3"])


def test_evaluate_hand_computed() -> None:
    run = {
        "q1": hits(["d2", "d1", "d3"], [3.0, 2.0, 1.0]),
        "q2": hits(["d4", "d6"], [2.0, 1.0]),
        "q3": hits(["d1"], [1.0]),  # no qrels: ignored and counted
        # q4 is judged but absent: scores 0 (trec_eval -c)
    }
    result = evaluate(run, QRELS, ["nDCG@10", "MRR@10", "R@2"])
    # q1: DCG = 0/log2(2) + 1/log2(3) + 2/log2(4) = 0.630930 + 1 = 1.630930
    #     IDCG = 2/log2(2) + 1/log2(3) = 2.630930  ->  nDCG@10 = 0.619900
    #     RR = 1/2 (first relevant at rank 2); R@2 = 1 of 2 relevant in the top 2 = 0.5
    # q2 and q4: nothing relevant retrieved -> 0 for every metric
    ndcg_q1 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert result.per_query["q1"]["nDCG@10"] == pytest.approx(ndcg_q1)
    assert result.per_query["q1"]["RR@10"] == pytest.approx(0.5)
    assert result.per_query["q1"]["R@2"] == pytest.approx(0.5)
    assert result.per_query["q2"] == {"nDCG@10": 0.0, "RR@10": 0.0, "R@2": 0.0}
    assert result.per_query["q4"]["nDCG@10"] == 0.0
    assert "q3" not in result.per_query
    assert result.aggregate["nDCG@10"] == pytest.approx(ndcg_q1 / 3)
    assert result.aggregate["RR@10"] == pytest.approx(0.5 / 3)
    assert list(result.aggregate) == ["nDCG@10", "RR@10", "R@2"]
    assert result.labels["RR@10"] == "MRR@10"
    assert (result.unjudged_queries, result.missing_queries) == (1, 1)


def test_evaluate_accepts_score_dicts() -> None:
    run = {"q1": {"d3": 5.0, "d1": 4.0}, "q2": {"d5": 1.0}, "q4": {"d9": 0.5}}
    result = evaluate(run, QRELS, parse_metrics(["nDCG@10", "RR@10"]))
    # every query ranks all its relevant documents in the ideal order
    assert result.aggregate == {"nDCG@10": pytest.approx(1.0), "RR@10": pytest.approx(1.0)}
    assert result.missing_queries == 0


@pytest.mark.parametrize("method", ["ttest", "randomization"])
def test_paired_pvalue(method: str) -> None:
    rng = np.random.default_rng(0)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.6, 1.0, size=40))}
    b = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.0, 0.4, size=40))}
    assert paired_pvalue(a, dict(a), method=method) == pytest.approx(1.0)
    assert paired_pvalue(a, b, method=method) < 0.001
    noisy = {q: v + float(rng.normal(0, 0.05)) for q, v in a.items()}
    assert paired_pvalue(a, noisy, method=method) > 0.01
    with pytest.raises(RetrieverError):
        paired_pvalue({"q1": 1.0}, {"q1": 0.0}, method=method)


def test_paired_pvalue_unknown_method() -> None:
    with pytest.raises(ValueError):
        paired_pvalue({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}, method="bogus")  # type: ignore[arg-type]


def test_coverage_report() -> None:
    report = coverage_report(QRELS, {"q1", "q2"}, {"d1", "d3", "d5"})
    assert report["qrels_queries"] == 3
    assert report["queries_without_text"] == 1 and report["queries_without_text_examples"] == ["q4"]
    assert report["qrels_documents"] == 4
    assert report["documents_not_in_index"] == 1 and report["documents_not_in_index_examples"] == ["d9"]
    assert report["judgments"] == 4 and report["judgments_to_missing_documents"] == 1
    lookup = coverage_report(QRELS, {"q1", "q2", "q4"}, lambda ids: {i for i in ids if i != "d1"})
    assert lookup["queries_without_text"] == 0
    assert lookup["documents_not_in_index_examples"] == ["d1"]
