"""Parts of ``benchmarks/precision.py``: watching a build's encoder, a judged subset of a BEIR collection,
test nDCG@10 of an index, and the bf16-vs-fp32 training runs."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


class EncodeRecorder:
    """While active, every ``SentenceTransformerEncoder.encode_documents`` call is timed and its prepared texts
    (prefix and preprocessing applied: what the model reads) and vectors kept.

    Attributes:
        seconds: time inside ``encode_documents``; texts: the prepared passage texts, in order; vectors: the
        ``(n_i, dim)`` float32 arrays returned; precision, model_path, runtime (``openvino`` or ``torch``): of the
        last encoder seen.
    """

    def __enter__(self) -> "EncodeRecorder":
        from retriever.encoders.base import SentenceTransformerEncoder

        self.seconds, self.texts, self.vectors = 0.0, [], []
        self.precision: str | None = None
        self.model_path: str | None = None
        self.runtime: str | None = None
        self._cls, self._original = SentenceTransformerEncoder, SentenceTransformerEncoder.encode_documents
        recorder = self

        def encode_documents(encoder: Any, texts: Any, *, batch_size: int = 64) -> np.ndarray:
            started = time.perf_counter()
            vectors = recorder._original(encoder, texts, batch_size=batch_size)
            recorder.seconds += time.perf_counter() - started
            recorder.texts.extend(encoder.prepare(texts, queries=False))
            recorder.vectors.append(vectors)
            recorder.precision, recorder.model_path = encoder.precision, encoder.spec.path
            recorder.runtime = encoder.document_runtime
            return vectors

        SentenceTransformerEncoder.encode_documents = encode_documents  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.encode_documents = self._original  # type: ignore[method-assign]


def subset_collection(collection: Path, out: Path, *, docs: int | None, queries: int = 60) -> Path:
    """``collection`` itself (``docs`` None), else a BEIR folder in ``out``: the first ``queries`` test and train
    queries (sorted ids), every document they judge, and the first ``docs`` other documents, in corpus order."""
    from indexing.formats.trec import read_qrels

    if docs is None:
        return collection
    splits = {split: read_qrels(collection / "qrels" / f"{split}.tsv") for split in ("test", "train")}
    kept = {split: {q: qrels[q] for q in sorted(qrels)[:queries]} for split, qrels in splits.items()}
    judged = {d for qrels in kept.values() for judgements in qrels.values() for d in judgements}
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    lines, others = [], 0
    with open(collection / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc_id = str(json.loads(line)["_id"])
            if doc_id in judged or others < docs:
                others += doc_id not in judged
                lines.append(line)
    (out / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    wanted = {q for qrels in kept.values() for q in qrels}
    with open(collection / "queries.jsonl", encoding="utf-8") as fh:
        (out / "queries.jsonl").write_text("".join(l for l in fh if str(json.loads(l)["_id"]) in wanted), encoding="utf-8")
    for split, qrels in kept.items():
        rows = [f"{q}\t{d}\t{r}" for q in sorted(qrels) for d, r in sorted(qrels[q].items())]
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return out


def ndcg_at_10(index: Path, collection: Path) -> float:
    """nDCG@10 of the dense ``index`` on the judged test queries of ``collection`` (queries encoded by torch, fp32)."""
    from indexing.formats.queries import read_queries
    from indexing.formats.trec import read_qrels
    from retriever.evaluation.metrics import evaluate
    from retriever.search.searcher import Searcher

    qrels = read_qrels(collection / "qrels" / "test.tsv")
    queries = {q: t for q, t in read_queries(collection / "queries.jsonl").items() if q in qrels}
    searcher = Searcher.load(index, device="cpu", query_backend="torch")
    try:
        ids = list(queries)
        run = dict(zip(ids, searcher.retrieve([queries[q] for q in ids], 100)))
    finally:
        searcher.close()
    return float(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"])


def training_config(collection: Path, *, precision: str, steps: int, batch_size: int) -> Any:
    """``train finetune`` of minilm on the collection's train pairs: in-batch negatives, seed 0, ``precision``."""
    from training.config import NegativesConfig, TrainConfig

    return TrainConfig(objective="finetune", data=(str(collection),), base="minilm", steps=steps, batch_size=batch_size,
                       lr=2e-5, warmup=max(1, round(0.1 * steps)), max_tokens=128, seed=0, precision=precision,
                       split="train", negatives=NegativesConfig(per_query=0)).validate()


def train_interleaved(collection: Path, work: Path, *, steps: int, batch_size: int, chunk: int) -> dict[str, Any]:
    """The bf16 and the fp32 run, ``chunk`` steps at a time in turn (``--stop-after`` then ``--resume``, which
    continues exactly), so machine load hits both alike. Steps/s: 1 / the median time between two step events
    of one invocation (model loading and resuming excluded)."""
    from training.run import run_training

    gaps: dict[str, list[float]] = {"bf16": [], "fp32": []}
    walls = {"bf16": 0.0, "fp32": 0.0}
    results: dict[str, Any] = {}
    for number, start in enumerate(range(0, steps, chunk)):
        for precision in (("bf16", "fp32") if number % 2 == 0 else ("fp32", "bf16")):
            stamps: list[float] = []
            config = training_config(collection, precision=precision, steps=steps, batch_size=batch_size)
            started = time.perf_counter()
            results[precision] = run_training(
                config, work / f"model-{precision}", device="cpu", overwrite=start == 0, resume=start > 0,
                stop_after=min(chunk, steps - start),
                callback=lambda event: stamps.append(time.perf_counter()) if event.kind == "step" else None)
            walls[precision] += time.perf_counter() - started
            gaps[precision] += [b - a for a, b in zip(stamps, stamps[1:])]
    figures: dict[str, Any] = {}
    for precision, result in results.items():
        card = json.loads((work / f"model-{precision}" / "retriever.json").read_text(encoding="utf-8"))
        figures[precision] = {"steps": result.steps_done, "wall_s": walls[precision], "step_gaps": len(gaps[precision]),
                              "steps_per_s": 1.0 / statistics.median(gaps[precision]), "last_loss": result.last_loss,
                              "card_training": card.get("training")}
    return figures


def train_figures(collection: Path, work: Path, *, steps: int, batch_size: int, chunk: int) -> dict[str, Any]:
    """bf16 and fp32 training runs from the same seed (interleaved), each model scored by test nDCG@10 of its
    fp32 index."""
    from retriever.index import Index

    figures: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "chunk": chunk,
                               **train_interleaved(collection, work, steps=steps, batch_size=batch_size, chunk=chunk)}
    for precision in ("bf16", "fp32"):
        index = work / f"index-{precision}"
        Index.build(collection, index, model=str(work / f"model-{precision}"), precision="fp32", index="Flat",
                    overwrite=True, query_encoder=False)
        figures[precision]["ndcg@10"] = ndcg_at_10(index, collection)
    figures["ratio_steps_per_s"] = figures["bf16"]["steps_per_s"] / figures["fp32"]["steps_per_s"]
    return figures
