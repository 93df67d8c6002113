"""Supervised fine-tuning with mined hard negatives on a shared collection; base vs trained on the TEST split.

Training pairs come from the collection's train qrels. A seeded fraction of the train queries is held out
as a dev split to pick the best step (test queries are never used for selection). Hard negatives are mined
from the base model's Flat index of the corpus (ranks 10-50 by default, known positives skipped); the same
index gives the base model's test scores.

    python -m benchmarks.train_finetune --collection scifact --steps 300 --eval-every 50
    python -m benchmarks.train_finetune --collection adi --train-split test --allow-test-training --steps 2 --tag smoke
    python -m benchmarks.train_finetune --hybrid-from benchmarks/results/train_finetune_scifact.json  # add hybrid to a run

Writes ``benchmarks/results/train_finetune[-TAG]_<collection>.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import require_data
from benchmarks.train_common import (add_recipe_flags, compare, evaluate_on_test, hybrid_markdown, hybrid_on_test, markdown,
                                     results_name, write)


def split_train(collection: Path, work: Path, *, train_split: str, dev_fraction: float, seed: int) -> tuple[Path, int, int]:
    """A BEIR folder in ``work`` whose ``qrels/train.tsv`` holds the training queries and ``qrels/dev.tsv`` the
    held-out ones (corpus and queries linked, not copied). Returns the folder and the two query counts."""
    from indexing.formats.trec import read_qrels

    qrels = read_qrels(collection / "qrels" / f"{train_split}.tsv")
    queries = sorted(qrels)
    random.Random(seed).shuffle(queries)
    n_dev = round(dev_fraction * len(queries))
    dev, train = set(queries[:n_dev]), set(queries[n_dev:])
    folder = work / "pairs"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        target = folder / name
        if not target.exists():
            os.symlink((collection / name).resolve(), target)
    for split, ids in (("train", train), ("dev", dev if dev else train)):
        rows = [f"{q}\t{d}\t{r}" for q in sorted(ids) for d, r in sorted(qrels[q].items())]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder, len(train), len(dev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_flags(parser, lr=2e-5, steps=300, queue_size=0, eval_every=50)
    parser.add_argument("--train-split", default="train", help="Qrels split the training pairs come from.")
    parser.add_argument("--allow-test-training", action="store_true", help="Allow --train-split test (smoke runs only: the numbers mean nothing).")
    parser.add_argument("--dev-fraction", type=float, default=0.2, help="Train queries held out to select the best step (0: select on the training queries).")
    parser.add_argument("--negative-ranks", default="10-50")
    parser.add_argument("--negatives-per-query", type=int, default=1)
    parser.add_argument("--no-hybrid", action="store_true", help="Skip the hybrid (dense + BM25) test figures.")
    parser.add_argument("--query-only", action="store_true",
                        help="Train the query side only: documents keep the base's embeddings, and the trained model searches "
                             "the base index (no hybrid figures: the hybrid searches with its index's own encoder).")
    parser.add_argument("--hybrid-from", type=Path, default=None,
                        help="Results JSON of an earlier run: add its hybrid figures (base and trained index) without retraining.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.hybrid_from is not None:
        add_hybrid_to(args.hybrid_from)
        return

    from retriever.devices import resolve_device
    from training.config import EvalConfig, NegativesConfig, TrainConfig
    from training.run import run_training

    collection = require_data(args.collection)
    if args.train_split == "test" and not args.allow_test_training:
        raise SystemExit("--train-split test trains on the test queries; pass --allow-test-training for a smoke run")
    if not (collection / "qrels" / f"{args.train_split}.tsv").is_file():
        raise SystemExit(f"{collection} has no qrels/{args.train_split}.tsv to train on")
    notes = ["SMOKE RUN: trained on the test queries, the scores mean nothing."] if args.train_split == "test" else []
    work = args.work or Path(tempfile.mkdtemp(prefix=f"train-finetune-{args.collection}-"))
    device = resolve_device(args.device)
    pairs, n_train, n_dev = split_train(collection, work, train_split=args.train_split, dev_fraction=args.dev_fraction, seed=args.seed)
    if not n_dev:
        notes.append("No dev queries held out: the best step is chosen on the training queries themselves.")

    started = time.perf_counter()
    base = evaluate_on_test(args.base, collection, work, device=device, index=args.base_index)
    base_seconds = time.perf_counter() - started
    low, high = (int(x) for x in args.negative_ranks.split("-"))
    config = TrainConfig(
        objective="finetune", data=(str(pairs),), base=args.base, steps=args.steps, batch_size=args.batch_size,
        accumulate=args.accumulate, lr=args.lr, warmup=args.warmup if args.warmup is not None else round(0.1 * args.steps),
        temperature=args.temperature, queue_size=args.queue_size, momentum=args.momentum, max_tokens=args.max_tokens,
        seed=args.seed, ema=args.ema, split="train",
        negatives=NegativesConfig(index=base["index"], rank_min=low, rank_max=high, per_query=args.negatives_per_query),
        eval=EvalConfig(dataset=str(pairs), split="dev", every=args.eval_every), query_only=args.query_only,
    ).validate()
    if args.query_only and not args.no_hybrid:
        notes.append("Query-only: no hybrid figures (the hybrid searches with its index's own encoder, the base).")
    started = time.perf_counter()
    result = run_training(config, work / "model", device=device, overwrite=True)
    train_seconds = time.perf_counter() - started
    same_documents = base["index"] if args.query_only else None  # a query-only model's documents are the base's
    trained = evaluate_on_test(str(work / "model"), collection, work, device=device, index=same_documents)

    comparison = compare(base, trained)
    recipe = {"objective": "finetune", "train_split": args.train_split, "train_queries": n_train, "dev_queries": n_dev,
              **{k: v for k, v in config.to_dict().items() if k not in ("objective", "crop", "scratch", "split")}}
    data = {
        "collection": args.collection, "device": device, "recipe": recipe, "test": comparison,
        "test_queries": trained["queries"], "selection_split": f"dev ({n_dev} held-out train queries)" if n_dev else "train",
        "best_step": result.best_step, "train_history": result.history, "last_loss": result.last_loss,
        "seconds": {"base_index_and_eval": round(base_seconds, 1), "training": round(train_seconds, 1),
                    "trained_index": trained["build_seconds"]},
        "model": str(work / "model"), "notes": notes,
    }
    if not (args.no_hybrid or args.query_only):
        data["hybrid"] = hybrid_figures(base["index"], trained["index"], collection)
    text = report(data, n_dev)
    path = write(results_name("finetune", args.collection, args.tag), data, text, args.results)
    print(text)
    print(f"wrote {path}")


def hybrid_figures(base_index: str, trained_index: str, collection: Path) -> dict:
    """Hybrid test figures with the base and the trained model's index, compared per query."""
    base, trained = hybrid_on_test(base_index, collection), hybrid_on_test(trained_index, collection)
    return {"fusion": trained["fusion"], "alpha": trained["alpha"], "test": compare(base, trained)}


def report(data: dict, n_dev: int) -> str:
    recipe = data["recipe"]
    title = (f"Fine-tuning {recipe['base']} on {data['collection']} {recipe['train_split']} pairs with mined negatives "
             f"({recipe['steps']} steps, {data['test_queries']} test queries)")
    notes = data["notes"] + [f"Training took {data['seconds']['training'] / 60:.1f} min on {data['device']}."]
    text = markdown(title, recipe, data["test"], data["train_history"], notes,
                    selection=f"{n_dev} held-out train" if n_dev else "the training")
    if "hybrid" in data:
        text += "\n" + hybrid_markdown(data["hybrid"]["test"], data["hybrid"]["fusion"], data["hybrid"]["alpha"])
    return text


def add_hybrid_to(results: Path) -> None:
    """Hybrid figures for a finished run, from the indexes it left: its base index and ``<work>/index-model``."""
    import json

    data = json.loads(results.read_text(encoding="utf-8"))
    data.pop("machine", None), data.pop("written", None)
    trained_index = Path(data["model"]).parent / f"index-{Path(data['model']).name}"
    if not (trained_index / "manifest.json").is_file():
        raise SystemExit(f"{trained_index}: the run's trained index is gone; rerun the benchmark")
    collection = require_data(data["collection"])
    data["hybrid"] = hybrid_figures(data["recipe"]["negatives"]["index"], str(trained_index), collection)
    text = report(data, data["recipe"]["dev_queries"])
    path = write(results.stem, data, text, results.parent)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
