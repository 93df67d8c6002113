"""Document encoding and training precision on the CPU: ``--precision auto`` (bf16 documents on CPUs with native
bf16: compiled by OpenVINO where it is installed, else through a bf16-weights copy in torch) against fp32, on SciFact.

Figures:

* encoding speed: ``Index.build(..., precision="auto")`` passages/s (build wall, and time inside the encoder)
  against raw ``SentenceTransformer.encode`` in fp32 on the build's own passage texts (the exact strings the
  model encoded) with the build's batch size; and a ``precision="fp32"`` build. The three run in interleaved
  rounds (their order rotating), medians reported;
* quality: nDCG@10 on the test queries of the auto index vs the fp32 index (bar: within 0.002), and the cosine
  of each passage's auto vector to its fp32 vector;
* the same speed ratio (and cosines) for the multilingual preset (``--encoder crosslingual``);
* training: ``train finetune`` (in-batch negatives) at bf16 and at fp32, same seed, same steps, taking turns
  every few steps (``--stop-after``/``--resume``, which continue exactly): steps/s (median step time) and test
  nDCG@10 of both models (each evaluated with an fp32 index, so only training differs).

    python -m benchmarks.precision --quick      # ~260 documents, 2 rounds, 12 training steps (turns of 4)
    python -m benchmarks.precision              # the whole corpus

Writes ``benchmarks/results/precision[-quick].{json,md}`` (``--results`` for elsewhere). The machine may be
shared: the load average before and after is recorded, and the rounds interleave so load hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.precision_parts import (EncodeRecorder, ndcg_at_10, subset_collection, train_figures)

BAR = 0.002
"""|nDCG@10(auto index) - nDCG@10(fp32 index)| must stay within this."""


def timed_build(corpus: Path, out: Path, *, preset: str, precision: str, batch_size: int) -> dict[str, Any]:
    """One ``Index.build`` of ``corpus`` (Flat, default chunking, no ONNX export) with the encoder watched."""
    from retriever.index import Index

    with EncodeRecorder() as seen:
        started = time.perf_counter()
        Index.build(corpus, out, preset=preset, precision=precision, batch_size=batch_size, index="Flat",
                    overwrite=True, query_encoder=False)
        wall = time.perf_counter() - started
    passages = len(seen.texts)
    return {"wall_s": wall, "encode_s": seen.seconds, "passages": passages, "precision": seen.precision,
            "runtime": seen.runtime, "texts": seen.texts, "vectors": np.vstack(seen.vectors), "model_path": seen.model_path}


def raw_fp32(model: Any, texts: list[str], batch_size: int) -> dict[str, Any]:
    """``SentenceTransformer.encode`` of ``texts`` in fp32 (normalized), timed."""
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    return {"encode_s": time.perf_counter() - started, "vectors": np.asarray(vectors, dtype=np.float32)}


def speed_rounds(corpus: Path, work: Path, *, preset: str, rounds: int, batch_size: int, fp32_build: bool) -> dict[str, Any]:
    """Interleaved rounds of the auto build, raw fp32 encode (and the fp32 build); medians and cosines."""
    from sentence_transformers import SentenceTransformer

    runs: dict[str, list[dict[str, Any]]] = {"auto": [], "raw_fp32": [], "fp32": []}
    first = timed_build(corpus, work / f"{preset}-auto", preset=preset, precision="auto", batch_size=batch_size)
    raw_model = SentenceTransformer(first["model_path"], device="cpu")
    kinds = ["auto", "raw_fp32"] + (["fp32"] if fp32_build else [])
    for number in range(rounds):
        order = kinds[number % len(kinds):] + kinds[:number % len(kinds)]
        for kind in order:
            if kind == "raw_fp32":
                runs[kind].append(raw_fp32(raw_model, first["texts"], batch_size))
            elif number == 0 and kind == "auto":
                runs[kind].append(first)
            else:
                runs[kind].append(timed_build(corpus, work / f"{preset}-{kind}", preset=preset, precision=kind,
                                              batch_size=batch_size))
    passages = first["passages"]
    cosines = (first["vectors"] * runs["raw_fp32"][0]["vectors"]).sum(axis=1)
    rate = lambda rows, key: statistics.median(passages / row[key] for row in rows)  # noqa: E731
    figures = {
        "preset": preset, "passages": passages, "batch_size": batch_size, "rounds": rounds,
        "auto_precision": first["precision"], "auto_runtime": first["runtime"],
        "auto_build_passages_per_s": rate(runs["auto"], "wall_s"),
        "auto_encode_passages_per_s": rate(runs["auto"], "encode_s"),
        "raw_fp32_passages_per_s": rate(runs["raw_fp32"], "encode_s"),
        "cosine_auto_vs_fp32": {"min": float(cosines.min()), "median": float(np.median(cosines))},
    }
    figures["ratio_auto_build_vs_raw_fp32"] = figures["auto_build_passages_per_s"] / figures["raw_fp32_passages_per_s"]
    if fp32_build:
        figures["fp32_build_passages_per_s"] = rate(runs["fp32"], "wall_s")
        figures["ratio_auto_build_vs_fp32_build"] = figures["auto_build_passages_per_s"] / figures["fp32_build_passages_per_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A small subset, 2 rounds, 12 training steps.")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--docs", type=int, default=None, help="Documents besides the judged ones (quick: 160; full: all).")
    parser.add_argument("--rounds", type=int, default=None, help="Interleaved rounds (quick: 2, full: 3).")
    parser.add_argument("--batch-size", type=int, default=64, help="Encoder batch size of the builds (the CLI's default).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per precision (quick: 12, full: 100).")
    parser.add_argument("--chunk", type=int, default=None, help="Training steps per turn of the interleaved runs (quick: 4, full: 10).")
    parser.add_argument("--skip", action="append", default=[], choices=["crosslingual", "training"])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None, help="Results folder (default: benchmarks/results).")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    steps = args.steps or (12 if args.quick else 100)
    work = args.work or Path(tempfile.mkdtemp(prefix="precision-"))
    collection = subset_collection(common.require_data(args.collection), work / "data",
                                   docs=args.docs if args.docs is not None else (160 if args.quick else None))
    load_before = os.getloadavg()
    data: dict[str, Any] = {"collection": args.collection, "quick": args.quick, "work": str(work),
                            "corpus_documents": sum(1 for _ in open(collection / "corpus.jsonl", encoding="utf-8"))}
    text_speed = speed_rounds(collection, work / "idx", preset="text", rounds=rounds, batch_size=args.batch_size, fp32_build=True)
    quality = {kind: ndcg_at_10(work / "idx" / f"text-{kind}", collection) for kind in ("auto", "fp32")}
    data["text"] = {**text_speed, "ndcg@10": quality, "ndcg_delta": quality["auto"] - quality["fp32"]}
    data["text"]["within_bar"] = abs(data["text"]["ndcg_delta"]) <= BAR
    if "crosslingual" not in args.skip:
        data["crosslingual"] = speed_rounds(collection, work / "idx", preset="crosslingual", rounds=rounds,
                                            batch_size=args.batch_size, fp32_build=False)
    if "training" not in args.skip:
        data["training"] = train_figures(collection, work / "train", steps=steps, batch_size=16 if args.quick else 32,
                                         chunk=args.chunk or (4 if args.quick else 10))
    data["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    name = "precision-quick" if args.quick else "precision"
    text = report(data)
    if args.results is not None:
        common.RESULTS = args.results
    path = common.write_results(name, data, text)
    print(text)
    print(f"wrote {path}")


def report(data: dict[str, Any]) -> str:
    """The markdown page of a run."""
    text = data["text"]
    lines = [f"# Encoding and training precision on the CPU ({data['collection']}, {data['corpus_documents']} documents"
             f"{', quick' if data['quick'] else ''})", "",
             f"auto = **{text['auto_precision']}** here, documents encoded by "
             f"{'OpenVINO' if text.get('auto_runtime') == 'openvino' else 'torch'}. Passages/s are medians of {text['rounds']} interleaved rounds, "
             f"batch size {text['batch_size']}; load average before/after {data['load_average']['before'][0]}/"
             f"{data['load_average']['after'][0]} on {os.cpu_count()} CPUs (a shared machine: ratios, not absolutes).", "",
             "| preset | passages | auto build p/s | auto encoder p/s | raw ST fp32 p/s | fp32 build p/s | "
             "auto build / raw fp32 | auto / fp32 build | min cosine |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ("text", "crosslingual"):
        row = data.get(key)
        if row is None:
            continue
        fp32 = row.get("fp32_build_passages_per_s")
        fp32_rate = "-" if fp32 is None else f"{fp32:.1f}"
        fp32_ratio = "-" if fp32 is None else f"{row['ratio_auto_build_vs_fp32_build']:.2f}x"
        lines.append(f"| {row['preset']} | {row['passages']} | {row['auto_build_passages_per_s']:.1f} | "
                     f"{row['auto_encode_passages_per_s']:.1f} | {row['raw_fp32_passages_per_s']:.1f} | {fp32_rate} | "
                     f"{row['ratio_auto_build_vs_raw_fp32']:.2f}x | {fp32_ratio} | {row['cosine_auto_vs_fp32']['min']:.5f} |")
    lines += ["", f"nDCG@10 (test): auto index {text['ndcg@10']['auto']:.4f}, fp32 index {text['ndcg@10']['fp32']:.4f}, "
                  f"delta {text['ndcg_delta']:+.4f} ({'within' if text['within_bar'] else 'OUTSIDE'} the {BAR} bar)."]
    training = data.get("training")
    if training is not None:
        lines += ["", f"Training (`train finetune`, in-batch negatives, {training['steps']} steps, batch {training['batch_size']}, "
                      f"seed 0; the two runs take turns every {training['chunk']} steps via --stop-after/--resume):", "",
                  "| precision | steps/s (median step) | wall s | last loss | test nDCG@10 (fp32 index) |", "|---|---|---|---|---|"]
        for precision in ("bf16", "fp32"):
            row = training[precision]
            lines.append(f"| {precision} | {row['steps_per_s']:.3f} | {row['wall_s']:.0f} | {row['last_loss']:.4f} | "
                         f"{row['ndcg@10']:.4f} |")
        lines.append(f"\nbf16 / fp32 steps/s: {training['ratio_steps_per_s']:.2f}x.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
