"""Cross-lingual retrieval and the script barrier, base model vs a transliteration-contrast-trained one.

    python -m benchmarks.crosslingual prepare --out work/xl-train.jsonl          # train halves -> corpus
    python -m benchmarks.crosslingual --base multilingual-e5-small --trained MODEL  # eval halves -> results

Every direction is evaluated on the held-out halves of :mod:`training.crosslingual_splits` (the same module
that wrote the training corpus), with exact search (every query against every document of its collection):

- ``xquad xx->en``: eval-half questions in each of 11 languages -> the English eval-half paragraphs.
- ``tatoeba xx->en``: eval-half sentences of each non-Latin-script language -> their English sides.
- ``xquad roman->native`` / ``tatoeba roman->native``: the same queries romanized with uroman -> the documents
  in the language's own script (XQuAD ``<lang>`` paragraphs; the Tatoeba sentences themselves).
- ``xquad roman->en`` / ``tatoeba roman->en``: romanized queries -> English.

Each query has exactly one relevant document, so accuracy@1 = R@1. Averages are unweighted means over
languages. ``--half dev`` evaluates the dev slice *of the train half* instead (recipe selection) and writes
nothing to ``benchmarks/results``. Per-model figures are cached in ``benchmarks/cache`` (keyed by the model
folder's weights), so the base model is evaluated once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from indexing.formats.jsonl import load_jsonl
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels
from training.crosslingual_splits import (
    XQUAD_LANGUAGES,
    tatoeba_languages,
    tatoeba_pair_id,
    tatoeba_split,
    write_dev_collection,
    write_training_corpus,
    xquad_article,
    xquad_split_of,
)

log = logging.getLogger("benchmarks.crosslingual")

NON_LATIN_XQUAD = ("ar", "el", "hi", "ru", "th", "zh")
METRICS = ["R@1", "nDCG@10"]
DIRECTIONS = ("xquad xx->en", "tatoeba xx->en", "xquad roman->native", "tatoeba roman->native",
              "xquad roman->en", "tatoeba roman->en")
ROMAN_NATIVE = ("xquad roman->native", "tatoeba roman->native")


def non_latin_tatoeba(data: Path) -> list[str]:
    """Tatoeba languages whose sentences are mostly not in Latin script (decided from the data, not a list)."""
    from retriever.encoders.crosslingual.transliterate import is_latin_script

    out = []
    for lang in tatoeba_languages(data):
        texts = list(read_queries(data / "tatoeba" / f"{lang}-eng" / "queries.jsonl").values())[:200]
        if not is_latin_script(texts):
            out.append(lang)
    return out


# --- the evaluation tasks ---------------------------------------------------------------------------------
def xquad_half(data: Path, lang: str, half: str, limit: int = 0) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(queries, paragraphs, query -> relevant paragraph) of one language, restricted to ``half`` articles
    (and to the first ``limit`` questions in a fixed hash order when ``limit`` > 0; paragraphs are all kept)."""
    split = xquad_split_of(data)
    articles = {"eval": split.eval, "dev": split.dev}[half]
    folder = data / "xquad" / lang
    docs = {d["_id"]: d["text"] for d in load_jsonl(folder / "corpus.jsonl") if xquad_article(d["_id"]) in articles}
    relevant = {query: doc for query, judged in read_qrels(folder / "qrels" / "test.tsv").items()
                for doc in judged if doc in docs}
    queries = {q: text for q, text in read_queries(folder / "queries.jsonl").items() if q in relevant}
    if limit:
        kept = set(sorted(queries, key=lambda q: hashlib.sha256(f"xquad-sample:{q}".encode()).hexdigest())[:limit])
        queries = {q: t for q, t in queries.items() if q in kept}
    return queries, docs, relevant


def tatoeba_half(data: Path, lang: str, half: str, limit: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """(xx sentences, English sentences) of one language pair, keyed by pair id, restricted to ``half``
    (and to its first ``limit`` pairs in a fixed hash order when ``limit`` > 0)."""
    folder = data / "tatoeba" / f"{lang}-eng"
    queries = {tatoeba_pair_id(q): text for q, text in read_queries(folder / "queries.jsonl").items()}
    english = {tatoeba_pair_id(r["_id"]): r["text"] for r in load_jsonl(folder / "corpus.jsonl")}
    halves = tatoeba_split(lang, queries)
    keep = [pid for pid in queries if halves[pid] == half and pid in english]
    if limit:
        keep = sorted(keep, key=lambda pid: hashlib.sha256(f"tatoeba-sample:{lang}:{pid}".encode()).hexdigest())[:limit]
    return {p: queries[p] for p in keep}, {p: english[p] for p in keep}


class Scorer:
    """Encodes with one model (memoized per text and side) and scores exact search."""

    def __init__(self, model: str, *, device: str, batch_size: int):
        from retriever.encoders.base import load_encoder

        self.encoder = load_encoder(model, preset="crosslingual", device=device)
        self.batch_size = batch_size
        self.cache: dict[tuple[str, str], np.ndarray] = {}
        self.encoded = 0

    def vectors(self, texts: list[str], side: str) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if (side, t) not in self.cache))
        if todo:
            encode = self.encoder.encode_queries if side == "query" else self.encoder.encode_documents
            for text, vector in zip(todo, encode(todo, batch_size=self.batch_size)):
                self.cache[(side, text)] = vector
            self.encoded += len(todo)
        return np.stack([self.cache[(side, t)] for t in texts])  # (n, d)

    def score(self, queries: dict[str, str], docs: dict[str, str], relevant: dict[str, str]) -> dict[str, float]:
        from retriever.evaluation.metrics import evaluate
        from retriever.hits import Hits

        qids, dids = list(queries), list(docs)
        q = self.vectors([queries[i] for i in qids], "query")  # (nq, d)
        d = self.vectors([docs[i] for i in dids], "document")  # (nd, d)
        scores = q @ d.T  # (nq, nd)
        depth = min(100, len(dids))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        run = {qid: Hits([dids[j] for j in row], scores[i, row].astype(np.float32)) for i, (qid, row) in enumerate(zip(qids, top))}
        qrels = {qid: {relevant[qid]: 1} for qid in qids}
        result = evaluate(run, qrels, METRICS).aggregate
        return {"R@1": float(result["R@1"]), "nDCG@10": float(result["nDCG@10"]), "queries": len(qids), "documents": len(dids)}


def evaluate_model(model: str, data: Path, *, half: str, tatoeba: list[str], device: str, batch_size: int,
                   tatoeba_pairs: int = 0, xquad_questions: int = 0) -> dict[str, Any]:
    """Every direction for one model: ``{direction: {lang: {"R@1", "nDCG@10", "queries", "documents"}}}``."""
    from retriever.encoders.crosslingual.transliterate import romanize

    scorer = Scorer(model, device=device, batch_size=batch_size)
    started = time.perf_counter()
    out: dict[str, dict[str, Any]] = {d: {} for d in DIRECTIONS}
    english = xquad_half(data, "en", half)[1]
    for lang in XQUAD_LANGUAGES:
        if lang == "en":
            continue
        queries, native_docs, relevant = xquad_half(data, lang, half, xquad_questions)
        out["xquad xx->en"][lang] = scorer.score(queries, english, relevant)
        if lang in NON_LATIN_XQUAD:
            roman = dict(zip(queries, romanize(list(queries.values()))))
            out["xquad roman->native"][lang] = scorer.score(roman, native_docs, relevant)
            out["xquad roman->en"][lang] = scorer.score(roman, english, relevant)
        log.info("%s: xquad %s done (%d texts encoded, %.0fs)", model, lang, scorer.encoded, time.perf_counter() - started)
    for lang in tatoeba:
        sentences, english_side = tatoeba_half(data, lang, half, tatoeba_pairs)
        identity = {pid: pid for pid in sentences}
        roman = dict(zip(sentences, romanize(list(sentences.values()))))
        out["tatoeba xx->en"][lang] = scorer.score(sentences, english_side, identity)
        out["tatoeba roman->native"][lang] = scorer.score(roman, sentences, identity)
        out["tatoeba roman->en"][lang] = scorer.score(roman, english_side, identity)
        log.info("%s: tatoeba %s done (%d texts encoded, %.0fs)", model, lang, scorer.encoded, time.perf_counter() - started)
    return {"directions": out, "seconds": round(time.perf_counter() - started, 1), "encoded_texts": scorer.encoded}


def model_key(model: str) -> str:
    """A cache key that changes when a model folder's weights change."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    digest = hashlib.sha256()
    for weights in sorted(folder.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{folder.name}-{digest.hexdigest()[:12]}"


def cached_evaluation(model: str, data: Path, *, half: str, tatoeba: list[str], device: str, batch_size: int,
                      tatoeba_pairs: int = 0, xquad_questions: int = 0, refresh: bool = False) -> dict[str, Any]:
    key = hashlib.sha256(json.dumps([model_key(model), half, tatoeba, tatoeba_pairs, xquad_questions]).encode()).hexdigest()[:16]
    path = common.CACHE / "crosslingual" / f"{Path(model).name}-{half}-{key}.json"
    if path.is_file() and not refresh:
        log.info("%s: cached figures from %s", model, path)
        return json.loads(path.read_text(encoding="utf-8"))
    result = evaluate_model(model, data, half=half, tatoeba=tatoeba, device=device, batch_size=batch_size, tatoeba_pairs=tatoeba_pairs,
                            xquad_questions=xquad_questions)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


# --- summary ---------------------------------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize(base: dict[str, Any], trained: dict[str, Any] | None) -> dict[str, Any]:
    """Per-direction means (over languages) and the two acceptance figures (points = metric x 100)."""
    summary: dict[str, Any] = {}
    for direction in DIRECTIONS:
        row = {}
        for metric in METRICS:
            row[f"base {metric}"] = mean([v[metric] for v in base["directions"][direction].values()])
            if trained is not None:
                row[f"trained {metric}"] = mean([v[metric] for v in trained["directions"][direction].values()])
        summary[direction] = row
    if trained is None:
        return {"directions": summary}

    def roman_acc(run: dict[str, Any]) -> list[float]:
        return [v["R@1"] for d in ROMAN_NATIVE for v in run["directions"][d].values()]

    roman_gain = 100 * (mean(roman_acc(trained)) - mean(roman_acc(base)))
    ndcg_change = 100 * (summary["xquad xx->en"]["trained nDCG@10"] - summary["xquad xx->en"]["base nDCG@10"])
    acceptance = {
        "romanized_to_native_acc1_gain_points": round(roman_gain, 2),
        "romanized_languages": len(roman_acc(base)),
        "xquad_xx_en_ndcg10_change_points": round(ndcg_change, 2),
        "passed": bool(roman_gain >= 10 and ndcg_change >= -1),
    }
    return {"directions": summary, "acceptance": acceptance}


def markdown(base_name: str, trained_name: str | None, base: dict, trained: dict | None, summary: dict, recipe: dict) -> str:
    both = trained is not None
    lines = ["# Cross-lingual retrieval and the script barrier (held-out halves)", ""]
    if both:
        acc = summary["acceptance"]
        lines += [
            f"Base `{base_name}` vs `{trained_name}` trained with the transliteration contrast. "
            f"Romanized-query accuracy@1 (roman->native, mean over {acc['romanized_languages']} non-Latin XQuAD + Tatoeba "
            f"languages): **{acc['romanized_to_native_acc1_gain_points']:+.1f} points**; native XQuAD xx->en nDCG@10: "
            f"**{acc['xquad_xx_en_ndcg10_change_points']:+.1f} points** (target: >= +10 and >= -1: "
            f"{'passed' if acc['passed'] else 'NOT passed'}).", ""]
    header = "| direction (mean over languages) | languages | " + " | ".join(
        f"{w} {m}" for m in ("acc@1", "nDCG@10") for w in (("base", "trained", "delta") if both else ("base",))) + " |"
    lines += [header, "|---|---|" + "---|" * (6 if both else 2)]
    for direction in DIRECTIONS:
        row = summary["directions"][direction]
        cells = []
        for metric in METRICS:
            cells.append(f"{row[f'base {metric}']:.3f}")
            if both:
                cells += [f"{row[f'trained {metric}']:.3f}", f"{100 * (row[f'trained {metric}'] - row[f'base {metric}']):+.1f}"]
        lines.append(f"| {direction} | {len(base['directions'][direction])} | " + " | ".join(cells) + " |")
    lines += ["", "Per language, accuracy@1 (base -> trained; XQuAD rows also nDCG@10):", ""]
    for direction in DIRECTIONS:
        langs = base["directions"][direction]
        parts = []
        for lang, value in langs.items():
            text = f"{value['R@1']:.2f}"
            if both:
                text += f"→{trained['directions'][direction][lang]['R@1']:.2f}"
            if direction.startswith("xquad"):
                ndcg = f"{value['nDCG@10']:.2f}" + (f"→{trained['directions'][direction][lang]['nDCG@10']:.2f}" if both else "")
                text += f" (nDCG {ndcg})"
            parts.append(f"{lang} {text}")
        lines.append(f"- **{direction}**: " + ", ".join(parts))
    lines += ["", "Recipe and timing:", "", "```", *(f"{k}: {v}" for k, v in recipe.items()), "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    prep = sub.add_parser("prepare", help="Write the training corpus from the train halves.")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--exclude-dev", action="store_true", help="Leave out the dev slice of the train half (recipe runs).")
    prep.add_argument("--dev", type=Path, default=None, help="Also write the dev-slice BEIR folder here (for --eval ... --eval-split dev).")
    parser.add_argument("--base", default="multilingual-e5-small")
    parser.add_argument("--trained", default=None, help="A model folder written by `retriever train crosslingual`.")
    parser.add_argument("--half", choices=("eval", "dev"), default="eval", help="eval = held-out halves; dev = the dev slice of the train half.")
    parser.add_argument("--tatoeba", default="non-latin", help="Comma-separated Tatoeba languages, or non-latin (every non-Latin-script pair).")
    parser.add_argument("--tatoeba-pairs", type=int, default=50, help="Evaluate this many pairs (fixed hash order) of each Tatoeba language's held-out half; 0 = all (about 500).")
    parser.add_argument("--xquad-questions", type=int, default=300, help="Evaluate this many held-out questions per XQuAD language (fixed hash order; every held-out paragraph stays a candidate); 0 = all (635). The defaults keep a 2-core CPU run near 10 min per model.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--refresh", action="store_true", help="Ignore cached per-model figures.")
    parser.add_argument("--recipe", type=Path, default=None, help="JSON file describing the training run (recorded in the results).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = common.require_data()
    tatoeba = non_latin_tatoeba(data) if args.tatoeba == "non-latin" else [t for t in args.tatoeba.split(",") if t]
    if args.command == "prepare":
        counts = write_training_corpus(data, args.out, tatoeba=tatoeba, exclude_dev=args.exclude_dev)
        if args.dev is not None:
            counts["dev"] = write_dev_collection(data, args.dev, tatoeba=tatoeba)
        print(json.dumps({"out": str(args.out), "tatoeba": tatoeba, **counts}))
        return
    options = {"half": args.half, "tatoeba": tatoeba, "device": args.device, "batch_size": args.batch_size, "refresh": args.refresh,
               "tatoeba_pairs": args.tatoeba_pairs, "xquad_questions": args.xquad_questions}
    base = cached_evaluation(args.base, data, **options)
    trained = cached_evaluation(args.trained, data, **options) if args.trained else None
    summary = summarize(base, trained)
    recipe = json.loads(args.recipe.read_text(encoding="utf-8")) if args.recipe else {}
    recipe.update({"half": args.half, "tatoeba_pairs_per_language": args.tatoeba_pairs or "all",
                   "xquad_questions_per_language": args.xquad_questions or "all", "base_eval_seconds": base["seconds"],
                   **({"trained_eval_seconds": trained["seconds"]} if trained else {})})
    text = markdown(args.base, args.trained, base, trained, summary, recipe)
    print(text)
    if args.half == "eval":
        common.write_results("crosslingual", {"base": args.base, "trained": args.trained, "summary": summary, "recipe": recipe,
                                              "base_figures": base, "trained_figures": trained}, text)


if __name__ == "__main__":
    main()
