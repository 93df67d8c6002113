"""Copy the Markdown tables in benchmarks/results/ into README.md between the results markers.

    python -m benchmarks.report

So every figure in the README comes from a results file written by a benchmark script. A hand-written
``NAME.notes.md`` next to ``NAME.md`` (what a run's log showed, what the figures mean) is appended to its section.
"""

from __future__ import annotations

import re

from benchmarks.common import REPO, RESULTS

ORDER = ["quality", "engine_quality", "overhead", "speed", "memory", "cold_start"]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    names = [n for n in ORDER if (RESULTS / f"{n}.md").is_file()]
    names += sorted(p.stem for p in RESULTS.glob("*.md") if p.stem not in names and not p.stem.endswith(".notes"))
    sections = []
    for name in names:
        body = (RESULTS / f"{name}.md").read_text(encoding="utf-8").strip()
        body = re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", body, flags=re.M)  # under "## Benchmarks"
        body = body.replace("](speed.png)", "](benchmarks/results/speed.png)")
        notes = RESULTS / f"{name}.notes.md"
        if notes.is_file():
            body += "\n\n" + notes.read_text(encoding="utf-8").strip()
        sections.append(f"{body}\n\n<sub>source: `benchmarks/results/{name}.json`</sub>")
    block = f"{START}\n" + "\n\n".join(sections) + f"\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("<!-- results: filled from benchmarks/results/*.md -->", block)
    readme.write_text(text, encoding="utf-8")
    print(f"README.md: {len(names)} result sections")


if __name__ == "__main__":
    main()
