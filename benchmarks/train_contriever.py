"""Unsupervised domain adaptation (Contriever recipe) on a shared collection; base vs trained on the TEST split.

Trains on the collection's corpus text only (independent crops or sentence anchors, MoCo queue), selects the best
step on the collection's TRAIN queries when it has qrels/train.tsv (SciFact does; never on test), then evaluates base
and trained models with the engine (Flat index, --chunk-tokens 0) on the test queries.

With ``--merge-weights``, the output is a weight-space ensemble of the trained model and its base (WiSE-FT, the
``retriever train merge`` command): each candidate weight of the trained model is scored on the TRAIN queries and
the best one is evaluated on test; the trained model alone (w = 1) and the base alone (w = 0) compete too. A
collection without train queries takes exactly one weight, fixed beforehand (e.g. the one SciFact's train queries
chose).

    python -m benchmarks.train_contriever --collection scifact --steps 500 --eval-every 50
    python -m benchmarks.train_contriever --collection scifact --anchor sentence --mine --merge-weights 0.3,0.5,0.7
    python -m benchmarks.train_contriever --collection cisi --anchor sentence --mine --merge-weights 0.5 --eval-every 0
    python -m benchmarks.train_contriever --collection adi --steps 2 --batch-size 8 --tag smoke   # smoke run

Writes ``benchmarks/results/train_contriever[-TAG]_<collection>.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import require_data
from training.config import ANCHORS, parse_weights
from benchmarks.train_common import (add_recipe_flags, build_collection_index, compare, evaluate_on_test,
                                     evaluate_split, markdown, results_name, write)


def parse_merge_weights(text: str, *, select: bool) -> list[float]:
    """The candidate weights of the trained model (each in (0, 1]); several only when they can be selected.

    Raises:
        SystemExit: a weight outside (0, 1], not a number, or several weights without train queries to choose.
    """
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise SystemExit(f"--merge-weights: not a comma-separated list of numbers: {text!r}") from None
    if any(not 0.0 < w <= 1.0 for w in weights):
        raise SystemExit(f"--merge-weights: every weight must be in (0, 1] (got {text})")
    if len(weights) > 1 and not select:
        raise SystemExit("--merge-weights: this collection has no train queries to choose among weights; give one")
    return weights


def select_merge(trained: str, base: str, weights: list[float], collection: Path, work: Path, *, device: str,
                 select: bool, base_index: Path | None = None,
                 trained_index: Path | None = None, query_only: bool = False) -> tuple[str, float, list[dict[str, Any]]]:
    """Merge ``trained`` with ``base`` at each weight and pick the best on the train queries.

    The base itself (w = 0, scored with ``base_index``) is a row of the table and a candidate: when no merge beats
    it on the train queries, the output is the base model.

    Returns (chosen model folder, its weight, the selection table ``[{"weight", "metrics"}]``; empty without a choice).
    ``trained_index``: an index the trained model searches as it is. A ``--query-only`` model searches the base's,
    and so do its merges: only its query route moves toward the base (:func:`training.merge.merge_query_route`).
    """
    from training.merge import merge_models, merge_query_route

    candidates: dict[float, str] = {1.0: trained}
    for weight in weights:
        if weight < 1.0:
            out = work / f"merged-{weight:g}"
            if query_only:
                merge_query_route(trained, out, weight=weight, overwrite=True)
            else:
                merge_models([trained, base], out, weights=[weight, round(1.0 - weight, 10)], overwrite=True)
            candidates[weight] = str(out)
    if not select:
        weight = weights[0] if weights else 1.0
        return candidates[weight], weight, []
    candidates[0.0] = base
    table = []
    for weight, model in sorted(candidates.items()):
        index = base_index if weight == 0.0 else trained_index if weight == 1.0 or query_only else None
        scores = evaluate_split(model, collection, work, split="train", device=device, index=index)
        table.append({"weight": weight, "metrics": scores["aggregate"], "index": scores["index"]})
        logging.getLogger(__name__).info("merge weight %g: train %s", weight, scores["aggregate"])
    best = max(table, key=lambda row: row["metrics"]["nDCG@10"])
    return candidates[best["weight"]], best["weight"], table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_flags(parser, lr=1e-5, steps=500, queue_size=4096, eval_every=50)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--crop-min", type=float, default=0.1)
    parser.add_argument("--crop-max", type=float, default=0.5)
    parser.add_argument("--delete", type=float, default=0.1)
    parser.add_argument("--replace", type=float, default=0.0)
    parser.add_argument("--mask", type=float, default=0.0)
    parser.add_argument("--anchor", choices=ANCHORS, default="crop",
                        help="crop: two independent crops (Contriever); sentence: a sentence vs the rest of its document; "
                             "title: a title vs its body; conclusion: an abstract's concluding sentence vs the rest; "
                             "cited: a sentence vs the other documents, the hybrid teacher's best one its positive; title+X: both.")
    parser.add_argument("--sentences-per-doc", type=int, default=4)
    parser.add_argument("--min-sentence-words", type=int, default=6)
    parser.add_argument("--keep-sentence", type=float, default=0.1)
    parser.add_argument("--mine", action="store_true",
                        help="Mine hard negatives for sentence/title anchors from the base model's index of the corpus.")
    parser.add_argument("--negative-ranks", default="10-50")
    parser.add_argument("--negatives-per-query", type=int, default=1)
    parser.add_argument("--teacher", choices=("none", "hybrid"), default="none",
                        help="With --mine: 'hybrid' ranks negatives by BM25 + dense fusion and distils its scores.")
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--teacher-temperature", type=float, default=0.05)
    parser.add_argument("--teacher-index", type=Path, action="append", default=[],
                        help="--teacher hybrid: another dense index of the collection's corpus joining the fusion "
                             "(repeatable; built by `retriever index build` with another model); needs --teacher-weights.")
    parser.add_argument("--teacher-model", action="append", default=[],
                        help="--teacher hybrid: build an index of the collection with this model (its time counts) and "
                             "add it to the fusion, after any --teacher-index; repeatable; needs --teacher-weights.")
    parser.add_argument("--teacher-weights", default="",
                        help="With --teacher-index: fusion weights of the base index's dense scores, each teacher "
                             "index, then BM25 (e.g. 0.3,0.3,0.4).")
    parser.add_argument("--query-only", action="store_true",
                        help="Train the query side only (documents keep the base's embeddings; the base index is reused).")
    parser.add_argument("--freeze-layers", type=int, default=0,
                        help="keep the embeddings and the first N transformer layers fixed (partial fine-tuning)")
    parser.add_argument("--untitled-keys", action="store_true",
                        help="--query-only, title/sentence anchors: keys are document bodies without titles "
                             "(a sentence's positive also without the sentence).")
    parser.add_argument("--merge-weights", default="",
                        help="Comma-separated weights of the trained model in a merge with the base (base gets 1 - w); "
                             "chosen on train queries, or exactly one for a collection without them.")
    parser.add_argument("--trained", type=Path, default=None,
                        help="A model already trained on this collection by `retriever train contriever` (its "
                             "train_config.json is the recipe; the recipe flags are ignored): skip training.")
    parser.add_argument("--training-seconds", type=float, default=None,
                        help="With --trained: the wall time its training took (e.g. from /usr/bin/time).")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="Wall-clock budget of the training phase: the step that crosses it is the last one, "
                             "evaluated and exported (the schedule still decays towards --steps).")
    args = parser.parse_args()
    if (args.trained is None) != (args.training_seconds is None):
        parser.error("--trained and --training-seconds go together")
    if args.max_minutes is not None and not args.max_minutes > 0:
        parser.error("--max-minutes must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from retriever.devices import resolve_device
    from training.config import CropConfig, EvalConfig, NegativesConfig, SentenceConfig, TrainConfig
    from training.run import run_training

    collection = require_data(args.collection)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"train-contriever-{args.collection}-"))
    device = resolve_device(args.device)
    select = (collection / "qrels" / "train.tsv").is_file()
    weights = parse_merge_weights(args.merge_weights, select=select)
    notes = [] if select else [f"{args.collection} has no train split: no model selection, the output is the last step."]
    elsewhere = trained_elsewhere(args.trained, collection) if args.trained is not None else None  # fail before any work
    started = time.perf_counter()
    base = evaluate_on_test(args.base, collection, work, device=device, index=args.base_index)
    base_seconds = time.perf_counter() - started
    started = time.perf_counter()
    teacher_indexes = [str(p) for p in args.teacher_index] + [
        str(build_collection_index(name, collection, work, device=device)[0]) for name in args.teacher_model]
    teacher_seconds = time.perf_counter() - started
    low, _, high = args.negative_ranks.partition("-")
    negatives = NegativesConfig(index=base["index"], rank_min=int(low), rank_max=int(high),
                                per_query=args.negatives_per_query, teacher=args.teacher,
                                distill_weight=args.distill_weight, teacher_temperature=args.teacher_temperature,
                                teacher_indexes=tuple(teacher_indexes),
                                teacher_weights=parse_weights(args.teacher_weights, "--teacher-weights"),
                                ) if args.mine else NegativesConfig()
    config = TrainConfig(
        objective="contriever", data=(str(collection / "corpus.jsonl"),), base=args.base, steps=args.steps,
        batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr,
        warmup=args.warmup if args.warmup is not None else round(0.1 * args.steps), temperature=args.temperature,
        queue_size=args.queue_size, momentum=args.momentum, max_tokens=args.max_tokens, seed=args.seed, ema=args.ema,
        crop=CropConfig(args.crop_min, args.crop_max, args.chunk_tokens, args.delete, args.replace, args.mask),
        anchor=args.anchor, negatives=negatives,
        sentence=SentenceConfig(args.sentences_per_doc, args.min_sentence_words, args.keep_sentence),
        eval=EvalConfig(dataset=str(collection), split="train", every=args.eval_every) if select else EvalConfig(),
        query_only=args.query_only, untitled_keys=args.untitled_keys, freeze_layers=args.freeze_layers,
    ).validate()

    if args.trained is None:
        model = work / "model"
        started = time.perf_counter()
        result = run_training(config, model, device=device, overwrite=True,
                              time_limit_s=args.max_minutes * 60 if args.max_minutes is not None else None)
        train_seconds = time.perf_counter() - started
        if result.timed_out:
            notes.append(f"The training budget (--max-minutes {args.max_minutes:g}) ended the run after step "
                         f"{result.steps_done} of {config.steps}.")
    else:
        model, config, result = elsewhere
        train_seconds = args.training_seconds
        notes.append(f"Trained beforehand by `retriever train contriever` into {model}; its train_config.json is the recipe "
                     "below and its wall time was measured outside this script (--training-seconds).")
    started = time.perf_counter()
    same_documents = Path(base["index"]) if config.query_only else None  # its documents are the base's
    chosen, weight, merge_table = select_merge(str(model), args.base, weights, collection, work, device=device,
                                               select=select, base_index=Path(base["index"]), trained_index=same_documents,
                                               query_only=config.query_only)
    selection_seconds = time.perf_counter() - started
    chosen_index = next((Path(row["index"]) for row in merge_table if row["weight"] == weight), None)
    if chosen_index is None:  # no selection table: the trained model or a query-route merge (None otherwise)
        chosen_index = same_documents
    trained = evaluate_on_test(chosen, collection, work, device=device, index=chosen_index)

    comparison = compare(base, trained)
    recipe = {"objective": "contriever", **{k: v for k, v in config.to_dict().items() if k not in ("objective", "split", "scratch")}}
    data = {
        "collection": args.collection, "device": device, "recipe": recipe, "test": comparison,
        "test_queries": trained["queries"], "selection_split": "train" if select else None,
        "best_step": result.best_step, "train_history": result.history, "last_loss": result.last_loss,
        "merge": {"candidates": weights, "chosen_weight": weight,
                  "selection": [{k: v for k, v in row.items() if k != "index"} for row in merge_table]},
        "seconds": {"base_index_and_eval": round(base_seconds, 1), "teacher_indexes": round(teacher_seconds, 1),
                    "training": round(train_seconds, 1),
                    "merge_selection": round(selection_seconds, 1), "trained_index": trained["build_seconds"]},
        "model": chosen, "notes": notes,
    }
    title = f"Contriever adaptation ({config.anchor} anchors) of {args.base} on {args.collection} ({config.steps} steps, {trained['queries']} test queries)"
    text = markdown(title, recipe, comparison, result.history, notes + [f"Training took {train_seconds / 60:.1f} min on {device}."])
    text += merge_markdown(weights, weight, merge_table, args.base, query_only=config.query_only)
    path = write(results_name("contriever", args.collection, args.tag), data, text, args.results)
    print(text)
    print(f"wrote {path}")


def trained_elsewhere(folder: Path, collection: Path) -> tuple[Path, Any, Any]:
    """The model, recipe and training history of a run made by ``retriever train contriever`` in ``folder``.

    Raises:
        SystemExit: not a finished contriever run on this collection's corpus.
    """
    import json

    from training.config import TrainConfig
    from training.trainer import HISTORY_FILE, TrainResult

    try:
        config = TrainConfig.from_dict(json.loads((folder / "train_config.json").read_text(encoding="utf-8")))
        summary = json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--trained {folder}: not a finished training run ({exc})") from None
    corpus = str(collection / "corpus.jsonl")
    same = {str(collection.resolve()), str(Path(corpus).resolve())}  # the BEIR folder or its corpus file
    if config.objective != "contriever" or len(config.data) != 1 or str(Path(config.data[0]).resolve()) not in same:
        raise SystemExit(f"--trained {folder}: not a contriever run on {corpus} (objective {config.objective}, data {config.data})")
    best = summary.get("best") or {}
    result = TrainResult(folder, summary["steps"], True, None, best.get("step"),
                         next((h["metrics"] for h in summary["history"] if h["step"] == best.get("step")), None),
                         summary["history"])
    return folder, config, result


def merge_markdown(weights: list[float], chosen: float, table: list[dict[str, Any]], base: str, *,
                   query_only: bool = False) -> str:
    """The merge part of the results text: the candidates scored on train queries and the weight kept."""
    if not weights:
        return ""
    what = "The query route merged with its base route" if query_only else f"Merge with {base}"
    lines = ["", "", f"{what} (WiSE-FT weight-space ensemble; w = weight of the trained model): w = {chosen:g} kept."]
    if table:
        metrics = list(table[0]["metrics"])
        lines += ["", "Chosen on train queries:", "", "| w | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        lines += [f"| {row['weight']:g} | " + " | ".join(f"{v:.4f}" for v in row["metrics"].values()) + " |" for row in table]
    else:
        lines.append("The weight was fixed beforehand (no train queries here).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
