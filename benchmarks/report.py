"""Copy the Markdown tables in benchmarks/results/ into benchmarks/RESULTS.md.

    python -m benchmarks.report

So every figure in the project's documentation comes from a results file written by a benchmark script.
``benchmarks/RESULTS.md`` holds every results file, one section each, with a contents list; the README and the
guides in docs/ quote a few headline figures and link to their sections there (``tests/test_docs.py`` checks that
each quoted figure appears in the section it links to), so the README is never rewritten here.

A hand-written ``NAME.notes.md`` next to ``NAME.md`` (what a run's log showed, what the figures mean) is appended to
its section; a ``NAME.md`` without a ``NAME.json`` (a summary over many runs) or a ``NAME.notes.md`` without a
``NAME.md`` (a probe written up by hand) is a section of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import REPO, RESULTS

# The engine's own measurements first, in this order; then the hand-written summaries over many runs.
ORDER = ["quality", "engine_quality", "overhead", "speed", "memory", "cold_start",
         "train_contriever-summary", "sql-summary"]
ALL_RESULTS_TITLE = "# Benchmark results"


def result_names(results: Path) -> list[str]:
    """Every section's name: ``NAME`` of each ``NAME.md``, and of each ``NAME.notes.md`` without a ``NAME.md``;
    ``ORDER`` first, then alphabetical."""
    present = {p.name[: -len(".notes.md")] if p.name.endswith(".notes.md") else p.stem for p in results.glob("*.md")}
    names = [n for n in ORDER if n in present]
    return names + sorted(present - set(names))


def _main_file(results: Path, name: str) -> Path:
    """``NAME.md``, or ``NAME.notes.md`` when the notes stand alone."""
    main = results / f"{name}.md"
    return main if main.is_file() else results / f"{name}.notes.md"


def section(results: Path, name: str, *, depth: int, link_prefix: str) -> str:
    """One results file as Markdown: its headings pushed ``depth`` levels down, its notes appended.

    ``link_prefix`` is the path from the output file to ``results`` (for images and the source line).
    """
    main = _main_file(results, name)
    body = main.read_text(encoding="utf-8").strip()
    body = re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + depth) + " ", body, flags=re.M)
    body = re.sub(r"\]\(([^)/:]+\.png)\)", lambda m: f"]({link_prefix}{m.group(1)})", body)
    notes = results / f"{name}.notes.md"
    if notes.is_file() and notes != main:
        body += "\n\n" + notes.read_text(encoding="utf-8").strip()
    if (results / f"{name}.json").is_file():
        return f"{body}\n\n<sub>source: `benchmarks/results/{name}.json`</sub>"
    return f"{body}\n\n<sub>source: `benchmarks/results/{main.name}` (written by hand)</sub>"


def title_of(results: Path, name: str) -> str:
    """The first heading of a results file, or its name when it has none."""
    for line in _main_file(results, name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return name


def render_all(results: Path) -> str:
    """benchmarks/RESULTS.md: a contents list, then every results file, one ``##`` section each."""
    names = result_names(results)
    contents = "\n".join(f"- [{name}](#{name.lower()}): {title_of(results, name)}" for name in names)
    sections = "\n\n".join(f'<a id="{name.lower()}"></a>\n\n' + section(results, name, depth=1, link_prefix="results/")
                           for name in names)
    intro = ("Every results file in `benchmarks/results/`, written by the scripts in `benchmarks/` and copied here by "
             "`python -m benchmarks.report`. Unless a section says otherwise, runs are on a 2-core CPU machine shared "
             "with other jobs, no GPU; timings compared in a section were measured side by side in one process.")
    return f"{ALL_RESULTS_TITLE}\n\n{intro}\n\n{contents}\n\n{sections}\n"


def write(repo: Path = REPO, results: Path = RESULTS) -> int:
    """Rewrite ``repo/benchmarks/RESULTS.md``; returns the number of sections."""
    (repo / "benchmarks" / "RESULTS.md").write_text(render_all(results), encoding="utf-8")
    return len(result_names(results))


def main() -> None:
    total = write()
    print(f"benchmarks/RESULTS.md: {total} sections")


if __name__ == "__main__":
    main()
