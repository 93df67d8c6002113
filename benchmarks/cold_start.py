"""Issue 2, acceptance 6: cold start of ``retriever search`` (process start to printed results).

Builds (once) the SciFact index with the default model, then times fresh processes, median of N:
``retriever search INDEX "query"`` and, for contrast, ``retriever index info`` (which must not import torch).

    python -m benchmarks.cold_start [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import CACHE, require_data, write_results

CLI = [sys.executable, "-m", "cli"]


def timed(cmd: list[str], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    index = CACHE / "quality" / "scifact-minilm-chunk0"  # made by benchmarks.quality
    if not (index / "manifest.json").is_file():
        index = CACHE / "scifact-minilm"
        if not (index / "manifest.json").is_file():
            subprocess.run(CLI + ["index", "build", str(require_data("scifact")), "--out", str(index), "--chunk-tokens", "0"], check=True)
    query = "Vitamin D deficiency is associated with an increased risk of multiple sclerosis."
    search_median, search_all = timed(CLI + ["search", str(index), query, "-k", "10"], args.repeats)
    info_median, info_all = timed(CLI + ["index", "info", str(index)], args.repeats)
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, cli.main; from cli import index_cmd, search_cmd; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    results = {
        "search_median_s": round(search_median, 2), "search_runs_s": [round(t, 2) for t in search_all],
        "info_median_s": round(info_median, 2), "info_runs_s": [round(t, 2) for t in info_all],
        "cli_startup_imports_torch": probe.stdout.strip() == "True",
    }
    lines = [
        f"# Cold start (fresh process each time, median of {args.repeats})",
        "",
        "| command | median | runs |",
        "|---|---|---|",
        f"| `retriever search scifact-index \"...\"` (5,183 docs; loads torch + model, encodes, searches, prints a table) | {search_median:.2f} s | {', '.join(f'{t:.2f}' for t in search_all)} |",
        f"| `retriever index info scifact-index` (no torch) | {info_median:.2f} s | {', '.join(f'{t:.2f}' for t in info_all)} |",
        "",
        f"Importing the CLI imports torch: {results['cli_startup_imports_torch']}.",
    ]
    write_results("cold_start", results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
