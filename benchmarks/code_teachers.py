"""Issue 6 teacher ceiling: how far above minilm can any ranker available offline take CoSQA dev?

A trained code model learns from some signal better than its base: labels (CoSQA's own are off limits: the
issue trains on code that is not in CoSQA), or a teacher. This measures the teachers that load on this machine,
on CoSQA's 500 dev queries (never test): BM25, minilm and multilingual-e5-small on raw text, and weighted
score fusions (min-max normalised, :func:`retriever.search.fusion.weighted_score_fusion`) of minilm with each of the
others over a weight grid. The best fusion bounds what distilling these teachers could give; the grid is
chosen on dev itself, so the bound is optimistic.

    python -m benchmarks.code_teachers        # ~20 min here (the e5 index is most of it)
"""

from __future__ import annotations

import argparse
import logging

from benchmarks.code import index_for
from benchmarks.common import machine, require_data, write_results
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels
from retriever.evaluation.metrics import evaluate, parse_metrics
from retriever.search.fusion import weighted_score_fusion
from retriever.hits import Hits
from retriever.search.hybrid import HybridSearcher

METRICS = ["MRR@10", "nDCG@10"]
DEPTH = 100
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
log = logging.getLogger("benchmarks.code_teachers")


def runs_of(index, queries: dict[str, str], *, modes: tuple[str, ...] = ("dense",)) -> list[dict[str, Hits]]:
    """``{query id: hits}`` (top :data:`DEPTH`) of one index, per mode of ``modes`` (``dense``, ``bm25``), in order."""
    if any(mode != "dense" for mode in modes):
        from retriever.search.bm25_index import ensure_bm25_built

        ensure_bm25_built(index)  # this script owns the index (searches never build BM25)
    searcher = HybridSearcher.load(index, device="auto")
    ids, texts = list(queries), list(queries.values())
    try:
        return [dict(zip(ids, searcher.retrieve(texts, k=DEPTH, mode=mode))) for mode in modes]
    finally:
        searcher.close()


def fused(first: dict[str, Hits], second: dict[str, Hits], weight: float) -> dict[str, Hits]:
    """``(1 - weight) * first + weight * second`` per query (min-max normalised scores)."""
    return {q: weighted_score_fusion([first[q], second[q]], [1.0 - weight, weight]) for q in first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev", help="CoSQA qrels split (default dev; test is for reporting only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cosqa = require_data("cosqa")
    qrels = read_qrels(cosqa / "qrels" / f"{args.split}.tsv")
    texts = read_queries(cosqa / "queries.jsonl")
    queries = {q: texts[q] for q in qrels if q in texts}
    metrics = parse_metrics(METRICS)

    minilm = index_for(cosqa, "base-text", "minilm", "text")
    e5 = index_for(cosqa, "e5-text", "multilingual-e5-small", "text")
    (minilm_run, bm25_run), (e5_run,) = runs_of(minilm, queries, modes=("dense", "bm25")), runs_of(e5, queries)
    runs = {"minilm": minilm_run, "e5": e5_run, "bm25": bm25_run}
    rows = {name: evaluate(run, qrels, metrics).aggregate for name, run in runs.items()}
    for other in ("e5", "bm25"):
        for weight in WEIGHTS:
            rows[f"minilm + {other} (w {weight})"] = evaluate(fused(runs["minilm"], runs[other], weight), qrels,
                                                             metrics).aggregate
    base = rows["minilm"]["RR@10"]
    best = max(rows, key=lambda name: rows[name]["RR@10"])
    results = {"machine": machine(), "split": args.split, "queries": len(queries), "systems": rows,
               "best": best, "best_gain_over_minilm": round(rows[best]["RR@10"] - base, 4)}
    lines = [f"# Code-search teachers available offline: CoSQA {args.split} ({len(queries)} queries)", "",
             "Each fusion is (1 - w) * minilm + w * other, min-max normalised scores, top 100 of each. "
             "The best row bounds what distilling these teachers could add to minilm (chosen on this split itself).",
             "", "| ranker | MRR@10 | nDCG@10 | MRR@10 vs minilm |", "|---|---|---|---|"]
    for name, values in rows.items():
        lines.append(f"| {name} | {values['RR@10']:.4f} | {values['nDCG@10']:.4f} | {values['RR@10'] - base:+.4f} |")
    text = "\n".join(lines) + "\n"
    write_results(f"code_teachers_{args.split}", results, text)
    print(text)


if __name__ == "__main__":
    main()
