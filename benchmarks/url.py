"""Phishing-URL detection by nearest neighbours: the URL model vs minilm vs char n-gram TF-IDF + logistic regression.

Data: ``../shared/data/phishing-urls/urls.tsv`` (50,233 labelled URLs, benign rows first). Rows are shuffled
with a fixed seed and split by registered domain (``tldextract``, bundled suffix list; the host for IP
addresses), so no site is on both sides: about 20% of each class goes to TEST; a domain-disjoint 10% of
TRAIN is the validation slice that picks k (and the regularization of the baseline). TEST is used once.

1. ``retriever train url TRAIN --out MODEL`` (scratch tokenizer + 4-layer BERT, MLM + SimCSE), timed (wall and CPU);
   with ``--supervised``, ``--label-field label`` on TRAIN minus VAL (MLM + supervised contrastive).
2. ``retriever index build TRAIN --encoder url --model MODEL`` and the same for ``minilm`` (plain text), timed.
3. The vote (k, distance or uniform weights, and the phishing threshold: majority, or phishing when its share of
   the vote is >= t) picked on the validation slice (kNN over TRAIN minus VAL, in memory), then every TEST URL
   classified through the index with :func:`retriever.encoders.url.classify.classify` and those settings.
4. TF-IDF of character 1-5-grams + logistic regression fitted on TRAIN (C picked on VAL).

    python -m benchmarks.url                                  # everything
    python -m benchmarks.url --methods tfidf,url              # a subset; earlier results of the same split are merged
    python -m benchmarks.url --model MODEL --methods url      # reuse a trained model (its recorded training time)

The results file's URL model (two stages: 600 supervised steps with MLM, then 1,200 contrastive-only steps)::

    python -m benchmarks.url --supervised --steps 600 --methods url
    cp -r benchmarks/cache/url/model /tmp/url-600
    python -m benchmarks.url --supervised --base /tmp/url-600 --steps 1200 --lr 2e-4 --mlm-weight 0 --train-seed 1 --methods url

Writes ``benchmarks/results/url.{json,md}``; work files go to ``benchmarks/cache/url``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE, DATA, REPO, machine, write_results

log = logging.getLogger("benchmarks.url")

POSITIVE = "phishing"
K_GRID = (1, 3, 5, 10, 20, 50)
C_GRID = (1.0, 10.0, 100.0)
TRAIN_TIME_FILE = "benchmark_train.json"


# --- data and split --------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["url", "label"]:
            raise SystemExit(f"{path}: expected the header url<TAB>label, got {header}")
        return [tuple(line.rstrip("\n").split("\t")) for line in fh if line.strip()]  # type: ignore[misc]


def site_of(url: str) -> str:
    """The registered domain (public suffix list, bundled snapshot), else the host (IP addresses, bare names)."""
    from retriever.encoders.url.tokens import _extractor

    parts = _extractor()(url)
    new_name = hasattr(parts, "top_domain_under_public_suffix")  # tldextract >= 5.3; registered_domain before
    registered = parts.top_domain_under_public_suffix if new_name else parts.registered_domain
    return (registered or parts.fqdn or parts.domain or url).lower()


def group_split(rows: list[tuple[str, str]], groups: list[str], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (rest, held-out): whole groups, in a seeded random order, are held out while their majority
    label still holds fewer than ``share`` of that label's rows."""
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    names = sorted(by_group)
    order = np.random.default_rng(seed).permutation(len(names))
    totals = Counter(label for _, label in rows)
    held: Counter = Counter()
    rest_idx, held_idx = [], []
    for position in order:
        members = by_group[names[position]]
        majority = Counter(rows[i][1] for i in members).most_common(1)[0][0]
        if held[majority] + len(members) <= share * totals[majority] * 1.02:
            held_idx += members
            held.update(rows[i][1] for i in members)
        else:
            rest_idx += members
    return sorted(rest_idx), sorted(held_idx)


def make_split(seed: int) -> dict[str, list[tuple[str, str, str]]]:
    """TRAIN (with VAL inside it), VAL and TEST as (id, url, label) rows."""
    rows = read_rows(DATA / "phishing-urls" / "urls.tsv")
    order = np.random.default_rng(seed).permutation(len(rows))
    rows = [rows[i] for i in order]  # benign rows come first in the file
    ids = [f"u{int(i)}" for i in order]
    groups = [site_of(url) for url, _ in rows]
    train_idx, test_idx = group_split(rows, groups, 0.2, seed)
    train_rows = [rows[i] for i in train_idx]
    fit_sub, val_sub = group_split(train_rows, [groups[i] for i in train_idx], 0.1, seed + 1)
    pick = lambda idx: [(ids[i], *rows[i]) for i in idx]  # noqa: E731
    train = pick(train_idx)
    split = {"train": train, "fit": [train[i] for i in fit_sub], "val": [train[i] for i in val_sub], "test": pick(test_idx)}
    return split


def write_tsv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("id\turl\tlabel\n")
        fh.writelines(f"{i}\t{u}\t{lab}\n" for i, u, lab in rows)


def write_text_jsonl(path: Path, rows: list[tuple[str, str, str]]) -> None:
    from indexing.formats.jsonl import write_jsonl

    write_jsonl(path, ({"_id": i, "text": u, "label": lab} for i, u, lab in rows))


# --- metrics ------------------------------------------------------------------------------------------
def scores(truth: list[str], predicted: list[str | None]) -> dict[str, float]:
    """Accuracy, and precision/recall/F1 of the phishing class."""
    tp = sum(t == POSITIVE and p == POSITIVE for t, p in zip(truth, predicted))
    fp = sum(t != POSITIVE and p == POSITIVE for t, p in zip(truth, predicted))
    fn = sum(t == POSITIVE and p != POSITIVE for t, p in zip(truth, predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
    return {"accuracy": round(accuracy, 4), "f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4)}


# --- kNN -------------------------------------------------------------------------------------------------
def index_vectors(index: Path) -> tuple[list[str], np.ndarray]:
    """Document ids and vectors ``(n, d)`` stored in a Flat index (no re-encoding)."""
    import faiss

    from retriever.search.searcher import Searcher

    searcher = Searcher.load(index, device="cpu")
    flat = searcher.opened.vectors.index  # IndexIDMap2 over IndexFlat
    pids = faiss.vector_to_array(flat.id_map).astype(np.int64)
    vectors = flat.index.reconstruct_n(0, flat.ntotal)
    ids = searcher.opened.docstore.doc_ids(pids)
    searcher.close()
    return list(ids), np.ascontiguousarray(vectors, dtype=np.float32)


THRESHOLDS = (None, *[round(0.05 * i, 2) for i in range(1, 21)])  # None: the plain majority vote


def pick_vote(index: Path, split: dict[str, list[tuple[str, str, str]]]) -> tuple[dict[str, Any], dict[str, float]]:
    """The vote settings ``{"k", "weights", "threshold"}`` of the best validation F1: VAL URLs against FIT URLs
    (TRAIN minus VAL), exact kNN over the index's own vectors, with :func:`retriever.encoders.url.classify.weighted_vote`.
    Ties go to the smaller k, then distance weights, then the majority vote. Returns the settings and the
    validation F1 of every setting tried (keyed ``"k/weights/threshold"``)."""
    from retriever.encoders.url.classify import WEIGHTS, weighted_vote

    ids, vectors = index_vectors(index)
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    fit = vectors[[row[i] for i, _, _ in split["fit"]]]  # (n, d)
    val = vectors[[row[i] for i, _, _ in split["val"]]]  # (m, d)
    labels = [lab for _, _, lab in split["fit"]]
    similarity = val @ fit.T  # (m, n)
    top = np.argsort(-similarity, axis=1)[:, : max(K_GRID)]  # (m, K)
    truth = [lab for _, _, lab in split["val"]]
    f1: dict[str, float] = {}
    best: dict[str, Any] = {}
    best_f1 = -1.0
    for k in K_GRID:
        for weights in WEIGHTS:
            for threshold in THRESHOLDS:
                predicted = [weighted_vote([labels[j] for j in r[:k]], similarity[i, r[:k]], "ip", weights=weights,  # type: ignore[arg-type]
                                           positive=POSITIVE, threshold=threshold)[0] for i, r in enumerate(top)]
                key = f"{k}/{weights}/{threshold if threshold is not None else 'majority'}"
                f1[key] = scores(truth, predicted)["f1"]
                if f1[key] > best_f1:  # strictly better: equals keep the simpler setting tried first
                    best, best_f1 = {"k": k, "weights": weights, "threshold": threshold}, f1[key]
    return best, f1


def knn_test(index: Path, split: dict, vote: dict[str, Any]) -> dict[str, float]:
    from retriever.search.searcher import Searcher
    from retriever.encoders.url.classify import classify

    searcher = Searcher.load(index, device="cpu")
    verdicts = classify(searcher, [u for _, u, _ in split["test"]], k=vote["k"], weights=vote["weights"],
                        positive=POSITIVE, threshold=vote["threshold"], batch_size=128)
    return scores([lab for _, _, lab in split["test"]], [v.label for v in verdicts])


# --- TF-IDF + logistic regression --------------------------------------------------------------------------
def tfidf_lr(split: dict) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def fit(rows, c):
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 5), min_df=2, sublinear_tf=True, lowercase=True)
        features = vectorizer.fit_transform([u for _, u, _ in rows])
        model = LogisticRegression(C=c, max_iter=2000).fit(features, [lab for _, _, lab in rows])
        return vectorizer, model

    def predict(fitted, rows):
        vectorizer, model = fitted
        return list(model.predict(vectorizer.transform([u for _, u, _ in rows])))

    f1_by_c = {c: scores([lab for _, _, lab in split["val"]], predict(fit(split["fit"], c), split["val"]))["f1"] for c in C_GRID}
    best = max(C_GRID, key=lambda c: (f1_by_c[c], -c))
    started = time.perf_counter()
    fitted = fit(split["train"], best)
    seconds = time.perf_counter() - started
    result = scores([lab for _, _, lab in split["test"]], predict(fitted, split["test"]))
    return {**result, "C": best, "val_f1_by_C": {str(c): v for c, v in f1_by_c.items()}, "fit_seconds": round(seconds, 1)}


# --- CLI steps (run as a user runs them) --------------------------------------------------------------------
def cli(*args: str) -> dict[str, float]:
    """Run ``python -m cli ARGS``; its wall-clock and CPU (user + system) seconds (raises on failure)."""
    import resource

    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], check=True, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(cpu, 1)}


def sample(rows: list, size: int | None, seed: int) -> list:
    if size is None or size >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
    return [rows[int(i)] for i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Reuse this trained URL model (skips training).")
    parser.add_argument("--methods", default="tfidf,url,minilm", help="Comma-separated: tfidf, url, minilm (results of "
                        "earlier runs with the same split are kept in the work folder and merged).")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--supervised", action="store_true", help="Train the URL model with the labels (--label-field "
                        "label, supervised contrastive) on TRAIN minus the validation slice, so k is still picked on unseen labels.")
    parser.add_argument("--base", default="scratch", help="`retriever train url --base`: scratch, or a URL model to "
                        "continue from (e.g. a shorter supervised run); the results describe both stages.")
    parser.add_argument("--lr", type=float, default=None, help="`retriever train url --lr` (default: that command's).")
    parser.add_argument("--mlm-weight", type=float, default=1.0, help="`retriever train url --mlm-weight` (0 = contrastive only).")
    parser.add_argument("--train-seed", type=int, default=None, help="Training seed (default: --seed, which also fixes the split).")
    parser.add_argument("--extra-train", nargs="*", default=[], help="More `retriever train url` flags, e.g. --adversarial 1.0.")
    parser.add_argument("--sample-train", type=int, help="Use a seeded sample of this many TRAIN URLs (all methods).")
    parser.add_argument("--sample-test", type=int, help="Use a seeded sample of this many TEST URLs (all methods).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=CACHE / "url")
    parser.add_argument("--tag", default="", help="Results name suffix (url-TAG).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    work: Path = args.work
    split = make_split(args.seed)
    overlap = {site_of(u) for _, u, _ in split["train"]} & {site_of(u) for _, u, _ in split["test"]}
    assert not overlap, f"sites on both sides: {sorted(overlap)[:5]}"
    if args.sample_train:
        split["train"] = sample(split["train"], args.sample_train, args.seed)
        kept = {i for i, _, _ in split["train"]}
        split["fit"] = [r for r in split["fit"] if r[0] in kept]
        split["val"] = [r for r in split["val"] if r[0] in kept]
    split["test"] = sample(split["test"], args.sample_test, args.seed)
    write_tsv(work / "train.tsv", split["train"])
    write_tsv(work / "fit.tsv", split["fit"])
    write_text_jsonl(work / "train_text.jsonl", split["train"])
    sizes = {name: {"urls": len(rows), "sites": len({site_of(u) for _, u, _ in rows}), **Counter(lab for _, _, lab in rows)}
             for name, rows in split.items()}
    setting = {"seed": args.seed, "sample_train": args.sample_train, "sample_test": args.sample_test}
    log.info("split: %s", sizes)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    def store(name: str, result: dict[str, Any]) -> None:
        (work / f"result-{name}.json").write_text(json.dumps({"setting": setting, "result": result}, indent=2) + "\n")

    if "tfidf" in methods:  # the cheap baseline first
        store("tfidf", tfidf_lr(split))
        log.info("tfidf: %s", json.loads((work / "result-tfidf.json").read_text())["result"])
    model = args.model or work / ("model" if args.base == "scratch" else "model-continued")
    if args.model is None and Path(args.base).resolve() == model.resolve():
        parser.error(f"--base {args.base} is where this run would write its model; copy it elsewhere first")
    if "url" in methods and args.model is None:
        supervised = ["--label-field", "label"] if args.supervised else []
        timing = cli("train", "url", str(work / ("fit.tsv" if args.supervised else "train.tsv")), "--out", str(model),
                     "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-tokens", str(args.max_tokens),
                     "--seed", str(args.seed if args.train_seed is None else args.train_seed), "--device", "cpu",
                     "--overwrite", "--base", args.base, "--mlm-weight", str(args.mlm_weight), *supervised,
                     *(["--lr", str(args.lr)] if args.lr is not None else []), *args.extra_train)
        (model / TRAIN_TIME_FILE).write_text(json.dumps({**timing, "threads": _threads(), "setting": setting}) + "\n")
    builds = {
        "url": ["index", "build", str(work / "train.tsv"), "--encoder", "url", "--model", str(model)],
        "minilm": ["index", "build", str(work / "train_text.jsonl"), "--model", "minilm", "--chunk-tokens", "0"],
    }
    for name in (m for m in methods if m != "tfidf"):
        index = work / f"index-{name}"
        timing = cli(*builds[name], "--out", str(index), "--index", "Flat", "--device", "cpu", "--overwrite", "--batch-size", "128")
        vote, val_f1 = pick_vote(index, split)
        started = time.perf_counter()
        result = knn_test(index, split, vote)
        store(name, {**result, **vote, "val_f1": max(val_f1.values()), "val_f1_by_vote": val_f1,
                     "index_build": timing, "classify_wall_seconds": round(time.perf_counter() - started, 1)})
        log.info("%s: %s", name, result)

    names = {"url": "url model (kNN)", "minilm": "minilm (kNN)", "tfidf": "char n-gram TF-IDF + LR"}
    results: dict[str, Any] = {}
    for key, title in names.items():
        path = work / f"result-{key}.json"
        if path.is_file() and json.loads(path.read_text())["setting"] == setting:
            results[title] = json.loads(path.read_text())["result"]
    acceptance = {}
    if names["url"] in results:
        for key in ("tfidf", "minilm"):
            if names[key] in results:
                acceptance[f"url_f1_ge_{key}"] = results[names["url"]]["f1"] >= results[names[key]]["f1"]
    trained = json.loads((model / TRAIN_TIME_FILE).read_text()) if (model / TRAIN_TIME_FILE).is_file() else {}
    data = {
        "dataset": "phishing-urls (50,233 URLs: ISCX-URL-2016 benign + PhishTank 2020-05-09)",
        "split": {**setting, "by": "registered domain", "sizes": sizes},
        "results": results, "acceptance": acceptance,
        "url_model": {"path": str(model), "stages": training_stages(model)} if names["url"] in results else None,
        "machine": machine(),
    }
    write_results("url" + (f"-{args.tag}" if args.tag else ""), data, markdown(data))
    print(markdown(data))


def training_stages(model: Path) -> list[dict[str, Any]]:
    """The trainings that made ``model``, first one first: each stage's train_config and measured time (if any),
    following ``base`` while it names a folder that holds a train_config.json."""
    stages: list[dict[str, Any]] = []
    folder: Path | None = model
    while folder is not None and (folder / "train_config.json").is_file() and len(stages) < 10:
        cfg = json.loads((folder / "train_config.json").read_text())
        timing = folder / TRAIN_TIME_FILE
        stages.insert(0, {"path": str(folder), "train_config": cfg,
                          "training": json.loads(timing.read_text()) if timing.is_file() else {}})
        folder = Path(cfg["base"]) if cfg.get("base") not in (None, "scratch") else None
    return stages


def _stage_line(stage: dict[str, Any], first: bool) -> str:
    cfg, timing = stage["train_config"], stage["training"]
    size = cfg.get("scratch") or {}
    took = (f"{timing['wall_seconds'] / 60:.1f} min wall, {timing['cpu_seconds'] / 60:.1f} min CPU, {timing.get('threads')} threads"
            if timing else "time not measured")
    start = (f"from scratch: {size.get('layers')} layers, hidden {size.get('hidden')}, vocabulary {size.get('vocab_size')}"
             if cfg.get("base") == "scratch" else f"continued from the model above (`{cfg['base']}`)")
    objective = (f"supervised contrastive on the '{cfg['label_field']}' field of TRAIN minus the validation slice"
                 if cfg.get("label_field") else "unsupervised (SimCSE)")
    return (f"{'URL model' if first else 'then'}: {start}; {cfg['steps']} steps x {cfg['batch_size']} URLs at lr {cfg['lr']:g}, "
            f"max {cfg['max_tokens']} tokens, MLM {'on' if cfg.get('mlm') else 'off'}, adversarial {cfg.get('adversarial', 0)}, "
            f"{objective}; {took}.")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def markdown(data: dict[str, Any]) -> str:
    sizes = data["split"]["sizes"]
    lines = [
        "# Phishing URL detection: kNN on URL embeddings vs baselines",
        "",
        f"Test: {sizes['test']['urls']:,} URLs from {sizes['test']['sites']:,} sites never seen in training "
        f"({sizes['test'].get('phishing', 0):,} phishing); train: {sizes['train']['urls']:,} URLs from "
        f"{sizes['train']['sites']:,} sites. The kNN vote (k, weights, phishing threshold) and C picked on a "
        "domain-disjoint validation slice of train.",
        "",
        "| method | accuracy | F1 (phishing) | precision | recall | vote / C | index build wall (CPU) s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in data["results"].items():
        knob = f"C={r['C']:g}" if "k" not in r else f"k={r['k']}" + (
            f", {r['weights']}, phishing if share >= {r['threshold']:g}" if r.get("threshold") is not None
            else f", {r.get('weights', 'distance')}, majority")
        build = f"{r['index_build']['wall_seconds']} ({r['index_build']['cpu_seconds']})" if "index_build" in r else "-"
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | {knob} | {build} |")
    stages = (data["url_model"] or {}).get("stages") or []
    if not stages:
        lines += ["", "URL model and minilm: not measured in this run (see `--methods`)."]
    else:
        lines += ["", *(("- " if len(stages) > 1 else "") + _stage_line(stage, i == 0) for i, stage in enumerate(stages)),
                  "", "Training ran on a 2-core machine shared with other jobs."]
    for name, r in data["results"].items():
        if r.get("carried_over"):
            lines += ["", f"The {name} row is carried over: {r['carried_over']}."]
    lines += ["", "URL model's F1 at least each baseline's: " + (", ".join(f"{k} = {v}" for k, v in data["acceptance"].items()) or "not evaluated")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
