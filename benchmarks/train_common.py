"""Shared by the training benchmarks: test-split evaluation with the engine, result tables, recipe flags.

Test queries are touched only here, after training and model selection are over (selection uses train queries).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks import common

METRICS = ["nDCG@10", "R@100", "MRR@10"]


def add_recipe_flags(parser: argparse.ArgumentParser, *, lr: float, steps: int, queue_size: int, eval_every: int) -> None:
    """Flags every training benchmark takes (the recipe is recorded in the results file)."""
    parser.add_argument("--collection", default="scifact", help="Folder name under the shared data (RETRIEVER_DATA).")
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=None, help="Default: 10%% of the steps.")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--queue-size", type=int, default=queue_size)
    parser.add_argument("--momentum", type=float, default=0.999)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema", type=float, default=0.0, help="Decay of a moving average of the weights, evaluated and exported (0: off).")
    parser.add_argument("--eval-every", type=int, default=eval_every, help="Select the best step on train queries every N steps (0: start and end only).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base-index", type=Path, default=None, help="An existing Flat, unchunked index of the collection built with --base (skips re-encoding it).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for models and indexes (default: a temp folder).")
    parser.add_argument("--tag", default="", help="Suffix of the results name, to keep several runs apart.")
    parser.add_argument("--results", type=Path, default=None, help="Results folder (default: benchmarks/results).")


def results_name(kind: str, collection: str, tag: str) -> str:
    return f"train_{kind}{'-' + tag if tag else ''}_{collection}"


def evaluate_on_test(model: str, collection: Path, work: Path, *, device: str, index: Path | None = None) -> dict[str, Any]:
    """:func:`evaluate_split` on the collection's test queries."""
    return evaluate_split(model, collection, work, split="test", device=device, index=index)


def evaluate_split(model: str, collection: Path, work: Path, *, split: str, device: str,
                   index: Path | None = None) -> dict[str, Any]:
    """Build a Flat, unchunked index of the collection with ``model`` (or reuse ``index``), retrieve the 100
    best documents for every judged query of ``split`` (``qrels/<split>.tsv``) with the Searcher, and score them.

    Returns ``{"aggregate": {...}, "per_query": {...}, "index": path, "build_seconds": s, "queries": n}``.
    """
    from retriever.encoders.base import load_encoder
    from indexing.formats.queries import read_queries
    from indexing.formats.trec import read_qrels
    from retriever.evaluation.metrics import evaluate
    from retriever.search.searcher import Searcher

    qrels = read_qrels(collection / "qrels" / f"{split}.tsv")
    queries = {q: t for q, t in read_queries(collection / "queries.jsonl").items() if q in qrels}
    encoder = load_encoder(model, device=device)
    seconds = 0.0
    if index is None:
        index, seconds = build_collection_index(model, collection, work, device=device, encoder=encoder)
    searcher = Searcher.load(index, device="cpu" if device == "cpu" else "auto", encoder=encoder)
    ids = list(queries)
    run = dict(zip(ids, searcher.retrieve([queries[q] for q in ids], 100)))
    result = evaluate(run, qrels, METRICS)
    name = {key: result.labels.get(key, key) for key in result.aggregate}  # "RR@10" -> "MRR@10" as asked
    per_query = {q: {name.get(k, k): v for k, v in values.items()} for q, values in result.per_query.items()}
    return {"aggregate": {name[k]: v for k, v in result.aggregate.items()}, "per_query": per_query, "index": str(index), "build_seconds": round(seconds, 1),
            "queries": len(ids)}


def build_collection_index(model: str, collection: Path, work: Path, *, device: str,
                           encoder: Any | None = None) -> tuple[Path, float]:
    """Build ``work/index-<model name>``: a Flat, unchunked index of the collection's corpus with ``model``
    (replacing one left there). Returns the index folder and the build's wall time in seconds."""
    from indexing.builder import BuildConfig, build_index
    from indexing.readers import read_corpus
    from retriever.encoders.base import load_encoder

    encoder = encoder if encoder is not None else load_encoder(model, device=device)
    index = work / f"index-{Path(model).name}"
    corpus = collection / "corpus.jsonl"
    started = time.perf_counter()
    build_index(index, lambda: read_corpus([corpus]), encoder,
                BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0, encoder=encoder.describe()), overwrite=True)
    return index, time.perf_counter() - started


def hybrid_on_test(index: str | Path, collection: Path) -> dict[str, Any]:
    """Hybrid (dense index + BM25, the engine's default fusion and alpha) on the test queries of ``collection``.

    BM25 is built beside the index first unless current. Returns ``{"aggregate", "per_query", "fusion", "alpha"}``.
    """
    from retriever.evaluation.runner import evaluate_index
    from retriever.search.hybrid import HybridSearcher
    from retriever.search.bm25_index import ensure_bm25_built

    ensure_bm25_built(Path(index))
    searcher = HybridSearcher.load(Path(index), device="cpu")
    try:
        report = evaluate_index(searcher, collection, split="test", metrics=METRICS, mode="hybrid", depth=100)
    finally:
        searcher.close()
    return {"aggregate": report.metrics, "per_query": report.per_query, "fusion": report.fusion, "alpha": report.alpha}


def hybrid_markdown(comparison: dict[str, Any], fusion: str, alpha: float | None) -> str:
    """The hybrid table: dense+BM25 with the base model's index vs with the trained model's index."""
    lines = ["", f"Hybrid with BM25 ({fusion} fusion, alpha {alpha}, the engine's default; nothing tuned on test):", "",
             "| metric (test split) | hybrid, base | hybrid, trained | delta | paired t-test p |", "|---|---|---|---|---|"]
    for metric, row in comparison.items():
        p = "-" if row["p_value"] is None else f"{row['p_value']:.3g}"
        lines.append(f"| {metric} | {row['base']:.4f} | {row['trained']:.4f} | {row['delta']:+.4f} | {p} |")
    return "\n".join(lines)


def compare(base: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """Deltas trained - base, with a paired t-test p-value per metric over the test queries."""
    from retriever.evaluation.metrics import paired_pvalue

    out: dict[str, Any] = {}
    for metric, value in trained["aggregate"].items():
        a = {q: v[metric] for q, v in trained["per_query"].items() if metric in v}
        b = {q: v[metric] for q, v in base["per_query"].items() if metric in v}
        out[metric] = {"base": base["aggregate"][metric], "trained": value, "delta": value - base["aggregate"][metric],
                       "p_value": paired_pvalue(a, b) if len(a) > 1 else None}
    return out


def markdown(title: str, recipe: dict[str, Any], comparison: dict[str, Any], history: list[dict[str, Any]], notes: list[str],
             *, selection: str = "train-split") -> str:
    lines = [f"# {title}", "", "| metric (test split) | base | trained | delta | paired t-test p |", "|---|---|---|---|---|"]
    for metric, row in comparison.items():
        p = "-" if row["p_value"] is None else f"{row['p_value']:.3g}"
        lines.append(f"| {metric} | {row['base']:.4f} | {row['trained']:.4f} | {row['delta']:+.4f} | {p} |")
    if history:
        lines += ["", f"Model selection on {selection} queries (the output model is the best step):", "",
                  "| step | " + " | ".join(history[0]["metrics"]) + " |", "|---|" + "---|" * len(history[0]["metrics"])]
        for h in history:
            lines.append(f"| {h['step']} | " + " | ".join(f"{v:.4f}" for v in h["metrics"].values()) + " |")
    lines += ["", "Recipe:", "", "```", *(f"{k}: {v}" for k, v in recipe.items()), "```"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def write(name: str, data: dict[str, Any], text: str, results_dir: Path | None) -> Path:
    if results_dir is not None:
        common.RESULTS = results_dir  # write_results reads the module global at call time
    return common.write_results(name, data, text)
