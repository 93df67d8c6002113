"""A retriever trained from random initialization on one collection's corpus alone, next to BM25 and a random ranker.

The tokenizer (WordPiece) and a small BERT are built from the corpus text (``--base scratch``), then trained
with the unsupervised Contriever objective (independent crops, MoCo queue). No queries or labels are read
before the final test evaluation. References on the same test queries: BM25 (Pyserini, over the trained
model's index) and a seeded random ranking of the corpus (mean of several seeds).

    python -m benchmarks.train_scratch --collection npl --steps 1500
    python -m benchmarks.train_scratch --collection adi --steps 3 --batch-size 8 --tag smoke   # smoke run

Writes ``benchmarks/results/train_scratch[-TAG]_<collection>.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import require_data
from benchmarks.train_common import METRICS, add_recipe_flags, evaluate_on_test, results_name, write

RANDOM_SEEDS = 5


def random_ranker(collection: Path, *, seeds: int = RANDOM_SEEDS) -> dict[str, float]:
    """Mean test metrics of ``seeds`` random rankings (top 100 of a seeded shuffle of the corpus per query)."""
    from indexing.readers import read_corpus
    from indexing.formats.trec import read_qrels
    from retriever.evaluation.metrics import evaluate
    from retriever.hits import Hits

    qrels = read_qrels(collection / "qrels" / "test.tsv")
    doc_ids = [doc.id for doc in read_corpus([collection / "corpus.jsonl"])]
    depth = min(100, len(doc_ids))
    scores = np.linspace(1.0, 0.0, depth, dtype=np.float32)
    totals: dict[str, float] = {}
    for seed in range(seeds):
        rng = random.Random(seed)
        run = {q: Hits(rng.sample(doc_ids, depth), scores) for q in qrels}
        result = evaluate(run, qrels, METRICS)
        for metric, value in result.aggregate.items():
            label = result.labels.get(metric, metric)
            totals[label] = totals.get(label, 0.0) + value / seeds
    return totals


def bm25_on_test(index: str, collection: Path) -> dict[str, float]:
    from retriever.evaluation.runner import evaluate_index
    from retriever.search.hybrid import HybridSearcher
    from retriever.search.bm25_index import ensure_bm25_built

    ensure_bm25_built(Path(index))  # built by this script, which owns the index (searches never build BM25)
    searcher = HybridSearcher.load(Path(index), device="cpu")
    try:
        return evaluate_index(searcher, collection, split="test", metrics=METRICS, mode="bm25", depth=100).metrics
    finally:
        searcher.close()


def markdown(title: str, systems: dict[str, dict[str, float]], recipe: dict[str, Any], notes: list[str]) -> str:
    lines = [f"# {title}", "", "| system (test split) | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, values in systems.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |")
    lines += ["", "Recipe:", "", "```", *(f"{k}: {v}" for k, v in recipe.items()), "```", "", *notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_flags(parser, lr=1e-4, steps=1500, queue_size=4096, eval_every=0)
    parser.set_defaults(collection="npl", base="scratch", batch_size=64, max_tokens=64, momentum=0.995)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--chunk-tokens", type=int, default=64)
    parser.add_argument("--crop-min", type=float, default=0.1)
    parser.add_argument("--crop-max", type=float, default=0.5)
    parser.add_argument("--delete", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.base != "scratch":
        raise SystemExit("this benchmark trains from scratch; use benchmarks.train_contriever to adapt a trained model")

    from retriever.devices import resolve_device
    from training.config import CropConfig, ScratchConfig, TrainConfig
    from training.run import run_training

    collection = require_data(args.collection)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"train-scratch-{args.collection}-"))
    device = resolve_device(args.device)
    config = TrainConfig(
        objective="contriever", data=(str(collection / "corpus.jsonl"),), base="scratch", steps=args.steps,
        batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr,
        warmup=args.warmup if args.warmup is not None else round(0.1 * args.steps), temperature=args.temperature,
        queue_size=args.queue_size, momentum=args.momentum, max_tokens=args.max_tokens, seed=args.seed, ema=args.ema,
        crop=CropConfig(args.crop_min, args.crop_max, args.chunk_tokens, args.delete, 0.0, 0.0),
        scratch=ScratchConfig(args.layers, args.hidden, args.heads, args.vocab_size),
    ).validate()
    started = time.perf_counter()
    result = run_training(config, work / "model", device=device, overwrite=True)
    train_seconds = time.perf_counter() - started
    trained = evaluate_on_test(str(work / "model"), collection, work, device=device)
    systems = {
        "trained from scratch (dense)": trained["aggregate"],
        "BM25": bm25_on_test(trained["index"], collection),
        f"random ranker (mean of {RANDOM_SEEDS} seeds)": random_ranker(collection),
    }
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("negatives", "split", "eval", "sentence", "anchor")}
    notes = [f"Trained on the corpus text only ({args.collection}/corpus.jsonl); test queries read only for this table.",
             f"Training took {train_seconds / 60:.1f} min on {device} (tokenizer and model built from the corpus included)."]
    data = {"collection": args.collection, "device": device, "recipe": recipe, "systems": systems,
            "test_queries": trained["queries"], "last_loss": result.last_loss,
            "seconds": {"training": round(train_seconds, 1), "trained_index": trained["build_seconds"]},
            "model": str(work / "model"), "notes": notes}
    title = f"From scratch on {args.collection}: {args.layers}-layer BERT, {args.steps} steps ({trained['queries']} test queries)"
    text = markdown(title, systems, recipe, notes)
    path = write(results_name("scratch", args.collection, args.tag), data, text, args.results)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
