"""Issue 3 quality benchmark: BM25, dense (every model given) and hybrid on every collection with qrels.

Each collection in ../shared/data that has qrels (SciFact, Cranfield, CISI, CACM, MEDLINE, NPL, LISA, ADI,
CoSQA) is indexed once per model (Flat, ``--chunk-tokens 0``, cached under benchmarks/cache/quality) with
BM25 beside it, and evaluated on its test split, judged queries only, with ``retriever.evaluation.runner``.
Hybrid uses the one fusion setting fixed in advance (score fusion, alpha 0.45, chosen on SciFact's train
split; see retriever/search/hybrid.py). p-values: paired t-test and paired randomization test on per-query nDCG@10.

    python -m benchmarks.quality [--models minilm] [--collections scifact,cranfield,...]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from benchmarks.common import CACHE, require_data, write_results
from indexing.builder import BuildConfig, build_index
from indexing.readers import read_corpus
from retriever.evaluation.runner import evaluate_index
from retriever.evaluation.metrics import paired_pvalue
from retriever.search.hybrid import DEFAULT_ALPHA, DEFAULT_FUSION, HybridSearcher
from retriever.search.bm25_index import ensure_bm25_built

COLLECTIONS = ["scifact", "cranfield", "cisi", "cacm", "medline", "npl", "lisa", "adi", "cosqa"]
CLASSIC = ["scifact", "cranfield", "cisi", "cacm", "medline", "npl", "lisa", "adi"]
METRICS = ["nDCG@10", "R@100", "MRR@10"]
PUBLISHED = {  # nDCG@10 on SciFact test, as published
    "scifact": {"BM25 (BEIR paper)": 0.665, "BM25 (Pyserini, flat)": 0.679, "Contriever": 0.649, "Contriever-msmarco": 0.677,
                "all-MiniLM-L6-v2 (sentence-transformers)": 0.645},
}


def index_for(collection: str, model: str, chunk_tokens: int) -> Path:
    """Build (once) the collection's index for ``model``; reused from the cache afterwards."""
    from retriever.encoders.base import load_encoder

    out = CACHE / "quality" / f"{collection}-{model.replace('/', '_')}-chunk{chunk_tokens}"
    if (out / "manifest.json").is_file():
        return out
    corpus = require_data(collection) / "corpus.jsonl"
    encoder = load_encoder(model, device="auto")
    overlap = chunk_tokens // 4
    config = BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=chunk_tokens, chunk_overlap=overlap)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    build_index(out, lambda: read_corpus([corpus]), encoder, config, resume=(out / ".build").exists())
    logging.info("built %s in %.0f s", out, time.perf_counter() - start)
    return out


def evaluate_collection(collection: str, models: list[str]) -> dict:
    dataset = require_data(collection)
    row: dict = {"collection": collection, "systems": {}, "pvalues": {}}
    per_query: dict[str, dict] = {}
    for n, model in enumerate(models):
        index = index_for(collection, model, 0)
        ensure_bm25_built(index)  # for bm25 and hybrid (this script owns the index; searches never build BM25)
        searcher = HybridSearcher.load(index, device="auto")
        modes = [("bm25", "bm25")] if n == 0 else []
        modes += [(f"dense:{model}", "dense"), (f"hybrid:{model}", "hybrid")]
        for name, mode in modes:
            report = evaluate_index(searcher, dataset, split="test", metrics=METRICS, mode=mode, depth=100)
            row["systems"][name] = {**report.metrics, "seconds": round(report.seconds, 1)}
            row["queries"] = report.queries
            row["coverage"] = report.coverage
            per_query[name] = {q: v.get("nDCG@10", 0.0) for q, v in report.per_query.items()}
            logging.info("%s %s %s", collection, name, report.metrics)
        searcher.close()
        hybrid, dense = f"hybrid:{model}", f"dense:{model}"
        for other in ("bm25", dense):
            row["pvalues"][f"{hybrid} vs {other}"] = {
                "ttest": paired_pvalue(per_query[hybrid], per_query[other], method="ttest"),
                "randomization": paired_pvalue(per_query[hybrid], per_query[other], method="randomization"),
            }
    return row


def markdown(rows: list[dict], models: list[str], extra: dict) -> str:
    model = models[0]
    lines = [
        "# Retrieval quality (test splits, judged queries only, nDCG@10)",
        "",
        f"Dense: {model}, Flat, `--chunk-tokens 0`. Hybrid: {DEFAULT_FUSION} fusion, alpha {DEFAULT_ALPHA} (fixed in advance on SciFact train).",
        "p: paired t-test / randomization test of hybrid against each system (per-query nDCG@10).",
        "",
        "| collection | queries | BM25 | dense | hybrid | p vs BM25 | p vs dense | hybrid beats both? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    wins = 0
    for row in rows:
        s = row["systems"]
        b, d, h = s["bm25"]["nDCG@10"], s[f"dense:{model}"]["nDCG@10"], s[f"hybrid:{model}"]["nDCG@10"]
        pb, pd = row["pvalues"][f"hybrid:{model} vs bm25"], row["pvalues"][f"hybrid:{model} vs dense:{model}"]
        beats = h > b and h > d
        significant = pb["ttest"] < 0.05 and pd["ttest"] < 0.05
        verdict = ("yes" + (", significant" if significant else ", not significant at 0.05")) if beats else "no"
        wins += beats and row["collection"] in CLASSIC
        lines.append(
            f"| {row['collection']} | {row['queries']} | {b:.4f} | {d:.4f} | {h:.4f} | {pb['ttest']:.3g} / {pb['randomization']:.3g} "
            f"| {pd['ttest']:.3g} / {pd['randomization']:.3g} | {verdict} |"
        )
    classic = [r for r in rows if r["collection"] in CLASSIC]
    lines += ["", f"Hybrid beats both BM25 and dense on {wins} of {len(classic)} collections (SciFact + 7 classic ones)."]
    for row in rows:
        if row["collection"] == "scifact":
            s = row["systems"]
            lines += ["", "SciFact, all metrics:", "", "| system | nDCG@10 | R@100 | MRR@10 |", "|---|---|---|---|"]
            for name, m in s.items():
                lines.append(f"| {name} | {m['nDCG@10']:.4f} | {m['R@100']:.4f} | {m['MRR@10']:.4f} |")
            if "scifact_chunked" in extra:
                c = extra["scifact_chunked"]
                lines.append(f"| dense:{model}, default chunking ({c['chunk_tokens']} tokens) | {c['nDCG@10']:.4f} | {c['R@100']:.4f} | {c['MRR@10']:.4f} |")
            lines += ["", "Published SciFact nDCG@10 for reference: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED["scifact"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--collections", default=",".join(COLLECTIONS))
    parser.add_argument("--no-chunked", action="store_true", help="skip the default-chunking SciFact row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    models = args.models.split(",")
    rows = [evaluate_collection(c, models) for c in args.collections.split(",")]
    extra: dict = {}
    if "scifact" in args.collections and not args.no_chunked:
        from retriever.encoders.base import load_encoder

        window = load_encoder(models[0], device="cpu").max_seq_length // 2
        searcher = HybridSearcher.load(index_for("scifact", models[0], window), device="auto")
        report = evaluate_index(searcher, require_data("scifact"), split="test", metrics=METRICS, mode="dense")
        extra["scifact_chunked"] = {**report.metrics, "chunk_tokens": window, "overlap": window // 4}
    results = {"models": models, "fusion": DEFAULT_FUSION, "alpha": DEFAULT_ALPHA, "collections": rows, **extra, "published": PUBLISHED}
    text = markdown(rows, models, extra)
    write_results("quality", results, text)
    print(text)


if __name__ == "__main__":
    main()
