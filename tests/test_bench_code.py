"""The CoSQA benchmark's acceptance checks and its reuse of a base index for query-only models (benchmarks/code.py)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.code import acceptance, query_only_base


def _row(original: float, renamed: float) -> dict:
    return {"original": {"MRR@10": original}, "renamed": {"MRR@10": renamed}}


def test_acceptance_compares_with_the_strongest_base() -> None:
    systems = {"bm25": _row(0.27, 0.25), "base": _row(0.51, 0.50), "base-text": _row(0.53, 0.515),
               "trained": _row(0.565, 0.552)}
    result = acceptance(systems)
    assert result["base_row"] == "base-text" and abs(result["gain"] - 0.035) < 1e-9 and result["gain_ok"]
    assert result["rule"].startswith("base drops < 0.02") and result["robust_ok"]  # drops 0.013 <= 0.015
    systems["trained"] = _row(0.55, 0.52)
    result = acceptance(systems)
    assert not result["gain_ok"] and not result["robust_ok"]
    systems = {"base": _row(0.5, 0.4), "trained": _row(0.6, 0.56)}  # base drop 0.1: trained may drop 0.05
    result = acceptance(systems)
    assert result["rule"].startswith("trained drop <= half") and result["robust_ok"]


def test_query_only_models_are_recognized_by_their_training_config(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    assert query_only_base(str(model)) is None
    (model / "train_config.json").write_text(json.dumps({"base": "minilm", "query_only": False}))
    assert query_only_base(str(model)) is None
    (model / "train_config.json").write_text(json.dumps({"base": "minilm", "query_only": True}))
    assert query_only_base(str(model)) == "minilm"


def test_teacher_fusion_weights_the_second_ranker() -> None:
    """benchmarks.code_teachers fuses minilm with another ranker per query: w = 0 keeps the first order, w = 1
    the second's, in between min-max normalised scores add up."""
    import numpy as np

    from benchmarks.code_teachers import fused
    from retriever.hits import Hits

    first = {"q": Hits(["a", "b", "c"], np.array([0.9, 0.5, 0.1], dtype=np.float32))}
    second = {"q": Hits(["c", "b", "a"], np.array([3.0, 2.0, 1.0], dtype=np.float32))}
    assert fused(first, second, 0.0)["q"].ids[:1] == ["a"]
    assert fused(first, second, 1.0)["q"].ids[:1] == ["c"]
    leaning_first, leaning_second = fused(first, second, 0.25)["q"], fused(first, second, 0.75)["q"]
    assert leaning_first.ids == ["a", "b", "c"] and np.allclose(leaning_first.scores, [0.75, 0.5, 0.25])
    assert leaning_second.ids == ["c", "b", "a"] and np.allclose(leaning_second.scores, [0.75, 0.5, 0.25])
