"""benchmarks.report: headline results go into the README, every result into benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import report


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "quality.md").write_text("# Retrieval quality\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", encoding="utf-8")
    (results / "speed.md").write_text("# Speed\n\n![recall vs QPS](speed.png)\n", encoding="utf-8")
    (results / "probe-x.md").write_text("# A design probe\n\nfigures\n", encoding="utf-8")
    (results / "probe-x.notes.md").write_text("What the probe showed.\n", encoding="utf-8")
    return results


def test_readme_gets_headlines_and_all_results_go_to_the_results_file(tmp_path: Path) -> None:
    results = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# tool\n\n## Benchmarks\n\n<!-- results: filled from benchmarks/results/*.md -->\n\n## After\n",
                      encoding="utf-8")

    shown, total = report.write(tmp_path, results)

    assert (shown, total) == (2, 3)
    text = readme.read_text(encoding="utf-8")
    assert "### Retrieval quality" in text and "### Speed" in text  # pushed under "## Benchmarks"
    assert "](benchmarks/results/speed.png)" in text
    assert "A design probe" not in text and "1 more" in text and "benchmarks/RESULTS.md" in text
    assert text.rstrip().endswith("## After")
    every = (tmp_path / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert every.index("## Retrieval quality") < every.index("## Speed") < every.index("## A design probe")
    assert "What the probe showed." in every and "](results/speed.png)" in every
    assert "- [probe-x](#probe-x): A design probe" in every

    report.write(tmp_path, results)  # idempotent: the block between the markers is replaced, not appended
    assert readme.read_text(encoding="utf-8") == text


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    results = _results(tmp_path)
    (tmp_path / "README.md").write_text("# tool\n", encoding="utf-8")
    with pytest.raises(ValueError, match="results:start"):
        report.write(tmp_path, results)
