"""Rank fusion on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retriever.search.fusion import normalized_score_fusion, reciprocal_rank_fusion, weighted_score_fusion
from retriever.hits import Hits


def hits(ids: list[str], scores: list[float] | None = None) -> Hits:
    """Hits with the given ids and (default: decreasing) scores."""
    if scores is None:
        scores = [float(len(ids) - i) for i in range(len(ids))]
    return Hits(ids, np.asarray(scores, dtype=np.float32))


def test_rrf_hand_computed() -> None:
    # a: 1/61 = 0.016393; b: 1/62 + 1/61 = 0.032522; c: 1/63 + 1/62 = 0.032002; d: 1/63 = 0.015873
    fused = reciprocal_rank_fusion([hits(["a", "b", "c"]), hits(["b", "c", "d"])], k=60)
    assert fused.ids == ["b", "c", "a", "d"]
    expected = [1 / 62 + 1 / 61, 1 / 63 + 1 / 62, 1 / 61, 1 / 63]
    assert fused.scores.dtype == np.float32
    np.testing.assert_allclose(fused.scores, expected, rtol=1e-6)


def test_rrf_ignores_scores_and_breaks_ties_by_id() -> None:
    # both documents score 1/61: ties go to the smaller id, whatever the run order
    fused = reciprocal_rank_fusion([hits(["b"], [100.0]), hits(["a"], [-5.0])])
    assert fused.ids == ["a", "b"]
    assert fused.scores[0] == fused.scores[1]


def test_rrf_depth_k_and_duplicates() -> None:
    fused = reciprocal_rank_fusion([hits(["a", "b", "c"]), hits(["c", "d"])], k=0, depth=1)
    assert fused.ids == ["a", "c"]  # only the first hit of each run; k=0 gives 1/rank = 1.0 each
    np.testing.assert_allclose(fused.scores, [1.0, 1.0])
    dup = reciprocal_rank_fusion([hits(["a", "a", "b"])], k=0)
    assert dup.ids == ["a", "b"]  # "a" counted once, at rank 1; "b" keeps rank 3
    np.testing.assert_allclose(dup.scores, [1.0, 1 / 3], rtol=1e-6)


def test_rrf_empty_and_invalid() -> None:
    empty = reciprocal_rank_fusion([])
    assert empty.ids == [] and empty.scores.shape == (0,)
    assert reciprocal_rank_fusion([hits([]), hits(["x"])]).ids == ["x"]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([hits(["a"])], k=-1)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([hits(["a"])], depth=0)


def test_normalized_fusion_hand_computed() -> None:
    dense = hits(["a", "b", "c"], [0.9, 0.5, 0.1])  # normalised: a=1, b=0.5, c=0
    sparse = hits(["c", "d"], [10.0, 4.0])  # normalised: c=1, d=0
    fused = normalized_score_fusion(dense, sparse, alpha=0.5)
    # a = 0.5*1 + 0.5*0 = 0.5; c = 0.5*0 + 0.5*1 = 0.5 (tie -> id); b = 0.25; d = 0
    assert fused.ids == ["a", "c", "b", "d"]
    np.testing.assert_allclose(fused.scores, [0.5, 0.5, 0.25, 0.0], atol=1e-6)
    fused = normalized_score_fusion(dense, sparse, alpha=0.8)
    # a = 0.8; b = 0.4; c = 0.2; d = 0
    assert fused.ids == ["a", "b", "c", "d"]
    np.testing.assert_allclose(fused.scores, [0.8, 0.4, 0.2, 0.0], atol=1e-6)


def test_normalized_fusion_extremes_and_single_score() -> None:
    dense = hits(["a", "b"], [2.0, 1.0])
    sparse = hits(["x"], [3.0])  # one distinct score -> 1.0
    only_sparse = normalized_score_fusion(dense, sparse, alpha=0.0)
    assert only_sparse.ids == ["x", "a", "b"]
    np.testing.assert_allclose(only_sparse.scores, [1.0, 0.0, 0.0])
    only_dense = normalized_score_fusion(dense, sparse, alpha=1.0)
    assert only_dense.ids == ["a", "b", "x"]
    flat = normalized_score_fusion(hits(["b", "a"], [0.3, 0.3]), hits([]), alpha=0.5)
    assert flat.ids == ["a", "b"]
    np.testing.assert_allclose(flat.scores, [0.5, 0.5])
    assert normalized_score_fusion(hits([]), hits([]), alpha=0.3).ids == []


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_normalized_fusion_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError):
        normalized_score_fusion(hits(["a"]), hits(["b"]), alpha=alpha)


def test_weighted_fusion_hand_computed_over_three_lists() -> None:
    a = hits(["x", "y"], [2.0, 0.0])        # normalised x 1, y 0
    b = hits(["y", "z"], [5.0, 1.0])        # y 1, z 0
    c = hits(["z", "x", "y"], [3.0, 2.0, 1.0])  # z 1, x 0.5, y 0
    fused = weighted_score_fusion([a, b, c], [0.5, 0.3, 0.2])
    assert fused.ids == ["x", "y", "z"]
    assert fused.scores.tolist() == pytest.approx([0.5 + 0.2 * 0.5, 0.3, 0.2])


def test_weighted_fusion_of_two_lists_is_normalized_score_fusion() -> None:
    dense = hits(["a", "b", "c"], [0.9, 0.5, 0.1])
    sparse = hits(["c", "d", "a"], [12.0, 7.0, 3.0])
    for alpha in (0.0, 0.3, 0.45, 1.0):
        expected = normalized_score_fusion(dense, sparse, alpha=alpha)
        got = weighted_score_fusion([dense, sparse], [alpha, 1.0 - alpha])
        assert got.ids == expected.ids and got.scores.tolist() == expected.scores.tolist()


@pytest.mark.parametrize("weights", [[0.5], [0.5, -0.1], [0.5, math.nan], [0.5, math.inf]])
def test_weighted_fusion_rejects_bad_weights(weights) -> None:
    with pytest.raises(ValueError):
        weighted_score_fusion([hits(["a"]), hits(["b"])], weights)
