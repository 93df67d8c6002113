"""Rank fusion of result lists (dense + sparse, or several dense runs): pure functions on :class:`Hits`.

Both functions return a new :class:`Hits`, best first, with ties broken by document id (ascending) so
the output is deterministic whatever the input order. Scores are accumulated in float64 and only
converted to float32 at the end, after sorting, so rounding cannot reorder documents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from retriever.hits import Hits

logger = logging.getLogger(__name__)


def _sorted_hits(scores: dict[str, float]) -> Hits:
    """Turn ``{doc_id: score}`` into Hits, best first, ties by id ascending."""
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return Hits(ids=[doc_id for doc_id, _ in ordered], scores=np.asarray([s for _, s in ordered], dtype=np.float32))


def reciprocal_rank_fusion(runs: Sequence[Hits], *, k: int = 60, depth: int | None = None) -> Hits:
    """Reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum_r 1 / (k + rank_r(d))``.

    Args:
        runs: result lists to fuse, each best first. Only the order matters, not the scores.
        k: the RRF constant (60 in the paper and in Pyserini); must be >= 0.
        depth: use only the first ``depth`` hits of each run (None: all of them); must be >= 1.

    Returns:
        Every document that appears in the top ``depth`` of at least one run, best first, ties by id.
        A document listed twice in one run counts once, at its best rank. Ranks start at 1.

    Raises:
        ValueError: ``k < 0`` or ``depth < 1``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 or None, got {depth}")
    fused: dict[str, float] = {}
    for run in runs:
        ids = run.ids if depth is None else run.ids[:depth]
        seen: set[str] = set()
        for rank, doc_id in enumerate(ids, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return _sorted_hits(fused)


def _min_max(hits: Hits) -> dict[str, float]:
    """Min-max normalise a list's scores to [0, 1]; one distinct score (or one hit) -> all 1.0.

    Non-finite scores are dropped (with a warning); a duplicated id keeps its first (best-ranked) score.
    """
    scores: dict[str, float] = {}
    for doc_id, score in zip(hits.ids, np.asarray(hits.scores, dtype=np.float64).tolist()):
        if doc_id in scores:
            continue
        if not math.isfinite(score):
            logger.warning("dropping non-finite score %r of document %r before fusion", score, doc_id)
            continue
        scores[doc_id] = score
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {doc_id: 1.0 for doc_id in scores}
    span = high - low
    return {doc_id: (score - low) / span for doc_id, score in scores.items()}


def weighted_score_fusion(runs: Sequence[Hits], weights: Sequence[float]) -> Hits:
    """Weighted sum of min-max normalised scores: ``score(d) = sum_r weights[r] * norm_r(d)``.

    Each list is normalised to [0, 1] on its own (a list whose scores are all equal becomes all 1.0);
    a document missing from a list gets 0 from it. Two lists with weights ``(alpha, 1 - alpha)`` are
    :func:`normalized_score_fusion`.

    Args:
        runs: result lists to fuse (e.g. several dense runs and a BM25 run), each best first.
        weights: one weight per list, each >= 0 and finite.

    Returns:
        The union of the lists, best first, ties by id.

    Raises:
        ValueError: a different number of weights than lists, or a negative / non-finite weight.
    """
    if len(weights) != len(runs):
        raise ValueError(f"need one weight per list: {len(runs)} lists, {len(weights)} weights")
    if any(not (math.isfinite(w) and w >= 0.0) for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    fused: dict[str, float] = {}
    for run, weight in zip(runs, weights):
        for doc_id, score in _min_max(run).items():
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * score
    return _sorted_hits(fused)


def normalized_score_fusion(dense: Hits, sparse: Hits, *, alpha: float) -> Hits:
    """Convex combination of min-max normalised scores: ``alpha * dense + (1 - alpha) * sparse``.

    Each list is normalised to [0, 1] on its own (a list whose scores are all equal becomes all 1.0);
    a document missing from one list gets 0 from it.

    Args:
        dense: the dense retriever's hits.
        sparse: the sparse (BM25) retriever's hits.
        alpha: weight of the dense scores, in [0, 1] (1: dense only, 0: sparse only, in the union's order).

    Returns:
        The union of both lists, best first, ties by id.

    Raises:
        ValueError: alpha outside [0, 1] (or NaN).
    """
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return weighted_score_fusion([dense, sparse], [alpha, 1.0 - alpha])
