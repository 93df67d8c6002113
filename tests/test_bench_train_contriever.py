"""The merge options of the unsupervised adaptation benchmark (benchmarks/train_contriever.py)."""

from __future__ import annotations

import pytest

from benchmarks.train_contriever import merge_markdown, parse_merge_weights


def test_merge_weights_are_parsed_and_checked() -> None:
    assert parse_merge_weights("0.3, 0.5,0.7", select=True) == [0.3, 0.5, 0.7]
    assert parse_merge_weights("", select=False) == []
    assert parse_merge_weights("0.5", select=False) == [0.5]
    with pytest.raises(SystemExit, match="no train queries"):
        parse_merge_weights("0.3,0.5", select=False)
    with pytest.raises(SystemExit, match=r"in \(0, 1\]"):
        parse_merge_weights("0,0.5", select=True)
    with pytest.raises(SystemExit, match="numbers"):
        parse_merge_weights("half", select=True)


def test_merge_markdown_reports_the_selection() -> None:
    table = [{"weight": 0.5, "metrics": {"nDCG@10": 0.61, "R@100": 0.9}},
             {"weight": 1.0, "metrics": {"nDCG@10": 0.6, "R@100": 0.91}}]
    text = merge_markdown([0.5], 0.5, table, "minilm")
    assert "w = 0.5 kept" in text and "| 0.5 | 0.6100 | 0.9000 |" in text and "| 1 | 0.6000 | 0.9100 |" in text
    assert "fixed beforehand" in merge_markdown([0.5], 0.5, [], "minilm")
    assert merge_markdown([], 1.0, [], "minilm") == ""
