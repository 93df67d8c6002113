"""Helpers shared by the benchmark scripts: data discovery, the real-embedding cache, result files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indexing.formats.jsonl import load_jsonl

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("RETRIEVER_BENCH_RESULTS", REPO / "benchmarks" / "results"))
"""Where write_results puts its files; RETRIEVER_BENCH_RESULTS redirects them (the smoke tests write to a temp folder)."""
CACHE = Path(os.environ.get("RETRIEVER_BENCH_CACHE", REPO / "benchmarks" / "cache"))
DATA = Path(os.environ.get("RETRIEVER_DATA", REPO.parent / "shared" / "data"))


def require_data(name: str = "") -> Path:
    path = DATA / name
    if not path.exists():
        raise SystemExit(f"{path} not found: set RETRIEVER_DATA to the folder holding the evaluation collections")
    return path


class PeakRss:
    """Samples this process's RSS every 20 ms in a thread; ``peak`` is the largest seen, in bytes.

    Used instead of ``ru_maxrss``, which Linux carries over ``exec`` from the parent process.
    """

    def __init__(self) -> None:
        import threading

        import psutil

        self.peak = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def write_results(name: str, data: dict[str, Any], markdown: str | None = None) -> Path:
    """Write ``results/<name>.json`` (and ``.md``) atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    if markdown is not None:
        (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    import platform

    import psutil

    info = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def distinct_texts(limit: int | None = None) -> list[str]:
    """Every distinct document and query text in the shared evaluation data, sorted (deterministic)."""
    texts: set[str] = set()
    for corpus in sorted(DATA.rglob("corpus.jsonl")):
        for name in ("corpus.jsonl", "queries.jsonl"):
            path = corpus.parent / name
            if not path.is_file():
                continue
            for record in load_jsonl(path):
                text = f"{record.get('title', '')} {record.get('text', '')}".strip()
                if text:
                    texts.add(text)
    urls = DATA / "phishing-urls" / "urls.tsv"
    if urls.is_file():
        with open(urls, encoding="utf-8") as fh:
            next(fh)
            texts.update(line.split("\t", 1)[0] for line in fh if line.strip())
    ordered = sorted(texts)
    return ordered[:limit] if limit else ordered


EMBED_MAX_TOKENS = 128
"""Texts are truncated to 128 tokens for the speed benchmarks' embedding cache (a CPU-time budget; the
vectors are still real model outputs). Quality benchmarks never use this cache."""


EMBED_TEXTS = 15 * 8192
"""How many of the (sorted) distinct texts the speed benchmarks embed: 122,880 (issue: 100k-250k real embeddings)."""


def real_embeddings(model: str = "minilm", *, batch_size: int = 128, count: int = EMBED_TEXTS) -> np.ndarray:
    """``(count, 384)`` float32 embeddings of the first ``count`` :func:`distinct_texts`, cached as .npy (no pickle).

    The first call encodes them (long on a CPU: run it once, e.g. ``python -m benchmarks.common``).
    Partial progress is saved every 8,192 texts, so an interrupted run continues where it stopped.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / f"embeddings-{model}-{count}.npy"
    if final.is_file():
        return np.load(final, mmap_mode="r", allow_pickle=False)
    from retriever.encoders.base import load_encoder

    texts = distinct_texts()[:count]
    encoder = load_encoder(model, device="auto")
    encoder.model.max_seq_length = EMBED_MAX_TOKENS
    parts_dir = CACHE / (f"embeddings-{model}.parts" if count == EMBED_TEXTS else f"embeddings-{model}-{count}.parts")
    parts_dir.mkdir(exist_ok=True)
    step = 8192
    for number, start in enumerate(range(0, len(texts), step)):
        part = parts_dir / f"{number:05d}.npy"
        if part.is_file():
            continue
        vectors = encoder.encode_documents(texts[start : start + step], batch_size=batch_size)
        tmp = part.with_suffix(".tmp.npy")
        np.save(tmp, vectors, allow_pickle=False)
        os.replace(tmp, part)
        print(f"embedded {min(start + step, len(texts)):,}/{len(texts):,}", flush=True)
    parts = [parts_dir / f"{n:05d}.npy" for n in range((len(texts) + step - 1) // step)]
    array = np.vstack([np.load(p, allow_pickle=False) for p in parts])[: len(texts)]
    tmp = CACHE / f"embeddings-{model}-{count}.tmp.npy"
    np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, final)
    return np.load(final, mmap_mode="r", allow_pickle=False)


if __name__ == "__main__":
    texts = distinct_texts()
    print(f"{len(texts):,} distinct texts")
    print(real_embeddings().shape)
