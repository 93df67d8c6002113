"""Copy the Markdown tables in benchmarks/results/ into the README and into benchmarks/RESULTS.md.

    python -m benchmarks.report

So every figure in the README comes from a results file written by a benchmark script. The README's
"Benchmarks" section (between the results markers) holds the headline results, the runs a reader of the README
needs; ``benchmarks/RESULTS.md`` holds every results file, with a contents list, so a study of many runs (the
training issue's recipes, the SQL probes) does not bury the README. A hand-written ``NAME.notes.md`` next to
``NAME.md`` (what a run's log showed, what the figures mean) is appended to its section in both places.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import REPO, RESULTS

# The engine's own measurements first, in this order; then the acceptance run of record of each capability.
ORDER = ["quality", "engine_quality", "overhead", "speed", "memory", "cold_start"]
HEADLINE = ORDER + [
    "scale", "serve", "train_finetune_scifact", "train_scratch_npl", "train_contriever-qR_scifact",
    "train_contriever-qH_cisi", "train_contriever-qH_cranfield", "train_contriever-qH_medline",
    "url", "crosslingual", "code_cosqa", "sql-scalar-k1",
]
START, END = "<!-- results:start -->", "<!-- results:end -->"
ALL_RESULTS_TITLE = "# Benchmark results"


def result_names(results: Path) -> list[str]:
    """Every results file's name (``NAME.md`` without ``.notes.md``): ``ORDER`` first, then alphabetical."""
    names = [n for n in ORDER if (results / f"{n}.md").is_file()]
    return names + sorted(p.stem for p in results.glob("*.md") if p.stem not in names and not p.stem.endswith(".notes"))


def headline_names(results: Path) -> list[str]:
    """The results files the README shows: ``HEADLINE`` order, those present."""
    return [n for n in HEADLINE if (results / f"{n}.md").is_file()]


def section(results: Path, name: str, *, depth: int, link_prefix: str) -> str:
    """One results file as Markdown: its headings pushed ``depth`` levels down, its notes appended.

    ``link_prefix`` is the path from the output file to ``results`` (for images and the source line).
    """
    body = (results / f"{name}.md").read_text(encoding="utf-8").strip()
    body = re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + depth) + " ", body, flags=re.M)
    body = re.sub(r"\]\(([^)/:]+\.png)\)", lambda m: f"]({link_prefix}{m.group(1)})", body)
    notes = results / f"{name}.notes.md"
    if notes.is_file():
        body += "\n\n" + notes.read_text(encoding="utf-8").strip()
    return f"{body}\n\n<sub>source: `benchmarks/results/{name}.json`</sub>"


def title_of(results: Path, name: str) -> str:
    """The first heading of a results file, or its name when it has none."""
    for line in (results / f"{name}.md").read_text(encoding="utf-8").splitlines():
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
             "`python -m benchmarks.report`; the README shows the headline ones.")
    return f"{ALL_RESULTS_TITLE}\n\n{intro}\n\n{contents}\n\n{sections}\n"


def render_readme(text: str, results: Path) -> str:
    """``text`` (the README) with the headline sections between the results markers.

    Raises:
        ValueError: the README has neither the markers nor the placeholder line.
    """
    names = headline_names(results)
    more = len(result_names(results)) - len(names)
    sections = [section(results, name, depth=2, link_prefix="benchmarks/results/") for name in names]
    sections.append(f"Every other results file ({more} more: the training recipes tried, the SQL design probes) is in "
                    "[benchmarks/RESULTS.md](benchmarks/RESULTS.md).")
    block = f"{START}\n" + "\n\n".join(sections) + f"\n{END}"
    if START in text:
        return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    placeholder = "<!-- results: filled from benchmarks/results/*.md -->"
    if placeholder not in text:
        raise ValueError(f"README has no {START} ... {END} block and no placeholder line")
    return text.replace(placeholder, block)


def write(repo: Path = REPO, results: Path = RESULTS) -> tuple[int, int]:
    """Rewrite ``repo/README.md`` and ``repo/benchmarks/RESULTS.md``; returns (README sections, all sections)."""
    readme = repo / "README.md"
    readme.write_text(render_readme(readme.read_text(encoding="utf-8"), results), encoding="utf-8")
    (repo / "benchmarks" / "RESULTS.md").write_text(render_all(results), encoding="utf-8")
    return len(headline_names(results)), len(result_names(results))


def main() -> None:
    shown, total = write()
    print(f"README.md: {shown} result sections; benchmarks/RESULTS.md: {total}")


if __name__ == "__main__":
    main()
