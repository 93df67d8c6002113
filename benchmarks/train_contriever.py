"""Unsupervised domain adaptation (Contriever recipe) on a shared collection; base vs trained on the TEST split.

Trains on the collection's corpus text only (independent crops, MoCo queue), selects the best step on the
collection's TRAIN queries when it has qrels/train.tsv (SciFact does; never on test), then evaluates base and
trained models with the engine (Flat index, --chunk-tokens 0) on the test queries.

    python -m benchmarks.train_contriever --collection scifact --steps 500 --eval-every 50
    python -m benchmarks.train_contriever --collection adi --steps 2 --batch-size 8 --tag smoke   # smoke run

Writes ``benchmarks/results/train_contriever[-TAG]_<collection>.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from benchmarks.common import require_data
from benchmarks.train_common import add_recipe_flags, compare, evaluate_on_test, markdown, results_name, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_flags(parser, lr=1e-5, steps=500, queue_size=4096, eval_every=50)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--crop-min", type=float, default=0.1)
    parser.add_argument("--crop-max", type=float, default=0.5)
    parser.add_argument("--delete", type=float, default=0.1)
    parser.add_argument("--replace", type=float, default=0.0)
    parser.add_argument("--mask", type=float, default=0.0)
    parser.add_argument("--anchor", choices=("crop", "sentence"), default="crop",
                        help="crop: two independent crops (Contriever); sentence: a sentence vs the rest of its document.")
    parser.add_argument("--sentences-per-doc", type=int, default=4)
    parser.add_argument("--min-sentence-words", type=int, default=6)
    parser.add_argument("--keep-sentence", type=float, default=0.1)
    parser.add_argument("--mine", action="store_true",
                        help="Mine hard negatives for sentence anchors from the base model's index of the corpus.")
    parser.add_argument("--negative-ranks", default="10-50")
    parser.add_argument("--negatives-per-query", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from retriever.devices import resolve_device
    from training.config import CropConfig, EvalConfig, NegativesConfig, SentenceConfig, TrainConfig
    from training.run import run_training

    collection = require_data(args.collection)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"train-contriever-{args.collection}-"))
    device = resolve_device(args.device)
    select = (collection / "qrels" / "train.tsv").is_file()
    notes = [] if select else [f"{args.collection} has no train split: no model selection, the output is the last step."]
    started = time.perf_counter()
    base = evaluate_on_test(args.base, collection, work, device=device, index=args.base_index)
    base_seconds = time.perf_counter() - started
    low, _, high = args.negative_ranks.partition("-")
    negatives = NegativesConfig(index=base["index"], rank_min=int(low), rank_max=int(high),
                                per_query=args.negatives_per_query) if args.mine else NegativesConfig()
    config = TrainConfig(
        objective="contriever", data=(str(collection / "corpus.jsonl"),), base=args.base, steps=args.steps,
        batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr,
        warmup=args.warmup if args.warmup is not None else round(0.1 * args.steps), temperature=args.temperature,
        queue_size=args.queue_size, momentum=args.momentum, max_tokens=args.max_tokens, seed=args.seed,
        crop=CropConfig(args.crop_min, args.crop_max, args.chunk_tokens, args.delete, args.replace, args.mask),
        anchor=args.anchor, negatives=negatives,
        sentence=SentenceConfig(args.sentences_per_doc, args.min_sentence_words, args.keep_sentence),
        eval=EvalConfig(dataset=str(collection), split="train", every=args.eval_every) if select else EvalConfig(),
    ).validate()

    started = time.perf_counter()
    result = run_training(config, work / "model", device=device, overwrite=True)
    train_seconds = time.perf_counter() - started
    trained = evaluate_on_test(str(work / "model"), collection, work, device=device)

    comparison = compare(base, trained)
    recipe = {"objective": "contriever", **{k: v for k, v in config.to_dict().items() if k not in ("objective", "split", "scratch")}}
    data = {
        "collection": args.collection, "device": device, "recipe": recipe, "test": comparison,
        "test_queries": trained["queries"], "selection_split": "train" if select else None,
        "best_step": result.best_step, "train_history": result.history, "last_loss": result.last_loss,
        "seconds": {"base_index_and_eval": round(base_seconds, 1), "training": round(train_seconds, 1),
                    "trained_index": trained["build_seconds"]},
        "model": str(work / "model"), "notes": notes,
    }
    title = f"Contriever adaptation of {args.base} on {args.collection} ({args.steps} steps, {trained['queries']} test queries)"
    text = markdown(title, recipe, comparison, result.history, notes + [f"Training took {train_seconds / 60:.1f} min on {device}."])
    path = write(results_name("contriever", args.collection, args.tag), data, text, args.results)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
