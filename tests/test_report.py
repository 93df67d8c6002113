"""benchmarks.report: every results file goes into benchmarks/RESULTS.md; the README is never rewritten."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "quality.md").write_text("# Retrieval quality\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", encoding="utf-8")
    (results / "quality.json").write_text("{}\n", encoding="utf-8")
    (results / "speed.md").write_text("# Speed\n\n![recall vs QPS](speed.png)\n", encoding="utf-8")
    (results / "speed.json").write_text("{}\n", encoding="utf-8")
    (results / "probe-x.md").write_text("# A design probe\n\nfigures\n", encoding="utf-8")
    (results / "probe-x.json").write_text("{}\n", encoding="utf-8")
    (results / "probe-x.notes.md").write_text("What the probe showed.\n", encoding="utf-8")
    (results / "sql-summary.md").write_text("# Every SQL run at a glance\n\n| run | share |\n", encoding="utf-8")
    (results / "lone-probe.notes.md").write_text("# A probe written up by hand\n\nno results file\n", encoding="utf-8")
    return results


def test_every_result_goes_to_the_results_file(tmp_path: Path) -> None:
    results = _results(tmp_path)

    total = report.write(tmp_path, results)

    assert total == 5
    every = (tmp_path / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    # the engine's own measurements first, then the hand-written summaries, then the rest alphabetically
    order = ["## Retrieval quality", "## Speed", "## Every SQL run at a glance", "## A probe written up by hand",
             "## A design probe"]
    assert [every.index(h) for h in order] == sorted(every.index(h) for h in order)
    assert "What the probe showed." in every and "](results/speed.png)" in every
    assert "- [probe-x](#probe-x): A design probe" in every and '<a id="probe-x"></a>' in every
    assert "source: `benchmarks/results/probe-x.json`" in every
    assert "source: `benchmarks/results/sql-summary.md` (written by hand)" in every
    assert "source: `benchmarks/results/lone-probe.notes.md` (written by hand)" in every
    assert every.count("no results file") == 1  # a lone notes file is its own section, not appended twice

    report.write(tmp_path, results)  # idempotent
    assert (tmp_path / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8") == every


def test_the_readme_is_left_alone(tmp_path: Path) -> None:
    results = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# tool\n\nHeadline figures, written by hand, linked to benchmarks/RESULTS.md.\n", encoding="utf-8")
    before = readme.read_text(encoding="utf-8")
    report.write(tmp_path, results)
    assert readme.read_text(encoding="utf-8") == before
