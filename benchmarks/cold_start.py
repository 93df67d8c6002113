"""Cold start of ``retriever search``: the index's ONNX query encoder against the torch backend, side by side.

On the SciFact index (built once with the default model, whole documents), each repeat times two fresh
processes, interleaved, from process start to the printed table: ``retriever search INDEX "query"`` (the
default ``--query-backend auto``: the index's ONNX graph, no torch) and the same with ``--query-backend torch``;
a third process runs ``--mode hybrid`` (the ONNX dense list fused with BM25, whose Lucene searcher runs in a child
process: the JVM's start is part of its time).
Then, in-process, SciFact's 300 test queries are searched with both backends: the share of queries whose top-10
ids are identical, and nDCG@10 of each.

    python -m benchmarks.cold_start [--repeats 5] [--quick]
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
QUERY = "Vitamin D deficiency is associated with an increased risk of multiple sclerosis."


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def scifact_index(data: Path) -> Path:
    """The cached SciFact index (whole documents, default model), with its ONNX query encoder."""
    index = CACHE / "scifact-minilm"
    if not (index / "manifest.json").is_file():
        subprocess.run(CLI + ["index", "build", str(data), "--out", str(index), "--chunk-tokens", "0", "--overwrite"], check=True)
    from indexing.manifest import read_manifest

    if "query_encoder" not in read_manifest(index).files:
        subprocess.run(CLI + ["index", "query-encoder", str(index)], check=True)
    from retriever.search.bm25_index import bm25_state

    if bm25_state(index, read_manifest(index)) != "current":
        subprocess.run(CLI + ["index", "bm25", str(index)], check=True)
    return index


def backend_agreement(index: Path, data: Path, limit: int | None) -> dict:
    """Top-10 identity and nDCG@10 of the two backends on the test queries (in-process, warm)."""
    from retriever.evaluation.metrics import evaluate
    from retriever.evaluation.runner import load_split
    from retriever.search.searcher import Searcher

    split = load_split(data, "test")
    ids = sorted(split.queries)[:limit]
    texts = [split.queries[q] for q in ids]
    runs, ndcg = {}, {}
    for backend in ("onnx", "torch"):
        searcher = Searcher.load(index, device="cpu", query_backend=backend)
        hits = searcher.retrieve(texts, 10)
        searcher.close()
        runs[backend] = dict(zip(ids, hits))
        ndcg[backend] = evaluate(runs[backend], {q: split.qrels[q] for q in ids}, ["nDCG@10"]).aggregate["nDCG@10"]
    same = sum(runs["onnx"][q].ids == runs["torch"][q].ids for q in ids)
    return {"queries": len(ids), "top10_identical": same, "top10_identical_share": round(same / len(ids), 4),
            "ndcg10_onnx": round(ndcg["onnx"], 4), "ndcg10_torch": round(ndcg["torch"], 4),
            "ndcg10_difference": round(abs(ndcg["onnx"] - ndcg["torch"]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 30 queries (smoke test)")
    args = parser.parse_args()
    repeats, limit = (2, 30) if args.quick else (args.repeats, None)
    data = require_data("scifact")
    index = scifact_index(data)
    fast, slow, hybrid = [], [], []
    for _ in range(repeats):  # interleaved, so all see the same machine load
        fast.append(timed(CLI + ["search", str(index), QUERY, "-k", "10"]))
        slow.append(timed(CLI + ["search", str(index), QUERY, "-k", "10", "--query-backend", "torch"]))
        hybrid.append(timed(CLI + ["search", str(index), QUERY, "-k", "10", "--mode", "hybrid"]))
    probe = subprocess.run(CLI[:1] + ["-c", "import sys, cli.main; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    agreement = backend_agreement(index, data, limit)
    results = {
        "repeats": repeats, "onnx_median_s": round(statistics.median(fast), 3), "onnx_runs_s": [round(t, 3) for t in fast],
        "torch_median_s": round(statistics.median(slow), 3), "torch_runs_s": [round(t, 3) for t in slow],
        "speedup": round(statistics.median(slow) / statistics.median(fast), 2),
        "hybrid_median_s": round(statistics.median(hybrid), 3), "hybrid_runs_s": [round(t, 3) for t in hybrid],
        "cli_startup_imports_torch": probe.stdout.strip() == "True", **agreement,
    }
    lines = [
        f"# Cold start of `retriever search` (fresh process to printed table, median of {repeats}, interleaved)",
        "",
        "| query backend | median | runs |",
        "|---|---|---|",
        f"| auto: the index's ONNX query encoder (no torch) | {results['onnx_median_s']:.2f} s | {', '.join(f'{t:.2f}' for t in fast)} |",
        f"| torch (`--query-backend torch`) | {results['torch_median_s']:.2f} s | {', '.join(f'{t:.2f}' for t in slow)} |",
        f"| auto, `--mode hybrid` (dense + BM25, Java started) | {results['hybrid_median_s']:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in hybrid)} |",
        "",
        f"ONNX is **{results['speedup']:.1f}x** faster to the first answer. On {agreement['queries']} SciFact test queries, "
        f"top-10 identical for {agreement['top10_identical']} ({agreement['top10_identical_share']:.1%}); nDCG@10 "
        f"{agreement['ndcg10_onnx']:.4f} (ONNX) vs {agreement['ndcg10_torch']:.4f} (torch). "
        f"Importing the CLI imports torch: {results['cli_startup_imports_torch']}.",
    ]
    write_results("cold_start", results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
