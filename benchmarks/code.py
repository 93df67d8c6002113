"""Code-search benchmark: CoSQA test MRR@10 / nDCG@10, and robustness to renamed variables.

Systems: BM25 (Pyserini, raw code), the base model (minilm) with the ``code`` preset (identifier splitting,
applied alike to queries and code), with ``--text-base`` minilm on raw text too, and the trained model with the
preset its folder records. A ``--query-only`` model (documents embedded by its base) searches the base's index
of its preset with its own query encoder. The acceptance compares the trained model with the strongest base row.
Corpora: CoSQA as published, and the same functions with every local variable and
parameter renamed to ``v0, v1, ...`` (:func:`training.code_augment.rename_variables`, scope-aware); functions
that do not parse as Python 3 (CoSQA has Python 2) are kept as they are, counted and logged, never dropped.
Indexes are Flat with ``--chunk-tokens 0``, cached under ``benchmarks/cache/code``. The test split's 500 queries
are run; nothing here looks at test results to pick anything.

    python -m benchmarks.code --trained MODEL_DIR [--text-base]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from benchmarks.common import CACHE, require_data, write_results
from indexing.builder import BuildConfig, build_index
from indexing.formats.jsonl import write_jsonl
from indexing.readers import read_corpus
from retriever.evaluation.runner import evaluate_index
from retriever.search.hybrid import HybridSearcher

METRICS = ["MRR@10", "nDCG@10"]
WORK = CACHE / "code"
log = logging.getLogger("benchmarks.code")


def renamed_cosqa(source: Path) -> tuple[Path, dict]:
    """CoSQA with every local variable and parameter renamed (cached); returns the folder and counts."""
    from training.code_augment import rename_variables

    out = WORK / "cosqa-renamed"
    stats_file = out / "renaming.json"
    if stats_file.is_file():
        return out, json.loads(stats_file.read_text())
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    counts = {"functions": 0, "renamed": 0, "unchanged": 0, "unparsable_kept_as_is": 0}

    def renamed():
        for doc in read_corpus([source]):
            counts["functions"] += 1
            try:
                text = rename_variables(doc.text, style="uninformative")
            except (SyntaxError, ValueError, RecursionError) as exc:
                log.warning("cosqa %s: does not parse as Python 3 (%s); kept as it is", doc.id, getattr(exc, "msg", exc))
                counts["unparsable_kept_as_is"] += 1
                text = doc.text
            else:
                counts["renamed" if text != doc.text else "unchanged"] += 1
            yield {"_id": doc.id, "title": doc.title, "text": text}

    write_jsonl(out / "corpus.jsonl", renamed())
    shutil.copy(source / "queries.jsonl", out / "queries.jsonl")
    for split in (source / "qrels").glob("*.tsv"):
        shutil.copy(split, out / "qrels" / split.name)
    stats_file.write_text(json.dumps(counts, indent=2) + "\n")
    return out, counts


def index_path(corpus: Path, name: str) -> Path:
    """Where system ``name``'s index of ``corpus`` is cached."""
    return WORK / f"{corpus.name}-{name}"


def index_for(corpus: Path, name: str, model: str, preset: str) -> Path:
    """Build (once) a Flat, unchunked index of ``corpus`` with ``model``/``preset``."""
    from retriever.encoders.base import load_encoder

    out = index_path(corpus, name)
    if (out / "manifest.json").is_file():
        return out
    encoder = load_encoder(model, preset=preset, device="auto")
    config = BuildConfig(corpus=(str(corpus / "corpus.jsonl"),), factory="Flat", chunk_tokens=0, chunk_overlap=0,
                         encoder=encoder.describe())
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    build_index(out, lambda: read_corpus([corpus / "corpus.jsonl"]), encoder, config, resume=(out / ".build").exists())
    log.info("built %s in %.0f s", out, time.perf_counter() - started)
    return out


def query_only_base(model_dir: str) -> str | None:
    """The base a ``--query-only`` model was trained from (its documents embed as the base's do), else None."""
    config = Path(model_dir) / "train_config.json"
    if not config.is_file():
        return None
    recorded = json.loads(config.read_text(encoding="utf-8"))
    return recorded.get("base") if recorded.get("query_only") else None


def evaluate(corpus: Path, name: str, model: str | None, preset: str, *, index_name: str | None = None) -> dict:
    """MRR@10 and nDCG@10 of one system on one corpus (``model`` None = BM25 over the first dense index).

    ``index_name``: search that system's index with ``model`` as the query encoder (a query-only model over its
    base's index: the documents' embeddings are the base's, so they are not encoded again).
    """
    from retriever.encoders.base import load_encoder

    encoder = None
    if index_name is not None:
        index = index_path(corpus, index_name)
        if not (index / "manifest.json").is_file():
            raise SystemExit(f"{index}: the base index to reuse is missing")
        encoder = load_encoder(model, preset=preset, device="auto")
    else:
        index = index_for(corpus, name if model else "base", model or "minilm", preset if model else "code")
    if not model:
        from retriever.search.bm25_index import ensure_bm25_built

        ensure_bm25_built(index)  # this script owns the index: it builds BM25 (searches never do)
    searcher = HybridSearcher.load(index, device="auto", encoder=encoder)
    try:
        report = evaluate_index(searcher, corpus, split="test", metrics=METRICS, mode="dense" if model else "bm25", depth=100)
    finally:
        searcher.close()
    log.info("%s on %s: %s", name, corpus.name, report.metrics)
    return {**report.metrics, "queries": report.queries, "seconds": round(report.seconds, 1)}


def acceptance(systems: dict) -> dict:
    """Issue 6's checks from the systems' rows (``original``/``renamed`` metrics): the trained model against the
    strongest base row (A1: MRR@10 gain >= 0.03; A2: drop under renaming at most half the base's, or no more
    than the base's when the base drops by less than 0.02)."""

    def drop(row: str) -> float:
        return systems[row]["original"]["MRR@10"] - systems[row]["renamed"]["MRR@10"]

    base_row = max((r for r in systems if r.startswith("base")), key=lambda r: systems[r]["original"]["MRR@10"])
    base_drop, trained_drop = drop(base_row), drop("trained")
    gain = systems["trained"]["original"]["MRR@10"] - systems[base_row]["original"]["MRR@10"]
    small = base_drop < 0.02
    return {
        "base_row": base_row, "gain": gain, "gain_ok": gain >= 0.03, "base_drop": base_drop, "trained_drop": trained_drop,
        "rule": "base drops < 0.02: trained must drop no more" if small else "trained drop <= half the base drop",
        "robust_ok": trained_drop <= base_drop if small else trained_drop <= base_drop / 2,
    }


def markdown(results: dict) -> str:
    rows = results["systems"]
    lines = [
        "# Code search: CoSQA test (500 queries, 6,267 functions)",
        "",
        "Renamed: every local variable and parameter renamed to v0, v1, ... (scope-aware); "
        f"{results['renaming']['unparsable_kept_as_is']} functions that do not parse as Python 3 kept as they are.",
        "",
        "| system | MRR@10 | nDCG@10 | MRR@10 renamed | nDCG@10 renamed | MRR@10 drop |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        o, n = r["original"], r["renamed"]
        lines.append(f"| {name} | {o['MRR@10']:.4f} | {o['nDCG@10']:.4f} | {n['MRR@10']:.4f} | {n['nDCG@10']:.4f} | "
                     f"{o['MRR@10'] - n['MRR@10']:+.4f} |")
    acc = results.get("acceptance")
    if acc:
        lines += ["", f"Trained vs the strongest base ({acc['base_row']}) MRR@10: {acc['gain']:+.4f} (needs >= +0.03): {'pass' if acc['gain_ok'] else 'FAIL'}.",
                  f"Drop under renaming: base {acc['base_drop']:+.4f}, trained {acc['trained_drop']:+.4f} "
                  f"({acc['rule']}): {'pass' if acc['robust_ok'] else 'FAIL'}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", help="the trained code model folder (omit to measure BM25 and the base only)")
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--text-base", action="store_true", help="also the base model on raw text (text preset)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    original = require_data("cosqa")
    renamed, counts = renamed_cosqa(original)
    systems: list[tuple[str, str | None, str, str | None]] = [("bm25", None, "code", None), ("base", args.base, "code", None)]
    if args.text_base:
        systems.append(("base-text", args.base, "text", None))
    if args.trained:
        from retriever.models.resolve import read_model_card

        trained = str(Path(args.trained).resolve())
        trained_preset = read_model_card(Path(trained)).get("preset", "code")
        reuse = None
        if query_only_base(trained) == args.base:  # same documents as the base: search its index with the new queries
            reuse = {"code": "base", "text": "base-text"}.get(trained_preset)
            if reuse == "base-text" and not args.text_base:
                systems.append(("base-text", args.base, "text", None))
        systems.append(("trained", trained, trained_preset, reuse))
    results: dict = {"renaming": counts, "base": args.base, "trained": args.trained, "systems": {}}
    for name, model, preset, reuse in systems:
        results["systems"][name] = {"model": model, "preset": preset, "index": reuse or name,
                                    "original": evaluate(original, name, model, preset, index_name=reuse),
                                    "renamed": evaluate(renamed, name, model, preset, index_name=reuse)}
    if args.trained:
        results["acceptance"] = acceptance(results["systems"])
    text = markdown(results)
    write_results("code_cosqa", results, text)
    print(text)


if __name__ == "__main__":
    main()
