"""The engine's side of ``benchmarks.peers`` (the project's venv), with the same protocol as ``peers_runner``.

    python -m benchmarks.peers_engine serve '{"system": "engine", "kind": "text", "path": INDEX}'

Systems:
  engine         ``Searcher.load(path, device="cpu")``, as ``retriever search`` opens an index (IVF lists
                 memory-mapped, the CLI's default); text queries through ``Searcher.search`` (encode + search +
                 doc-store hits), vector queries through ``Searcher.search_vectors``.
  engine-inmem   the same with ``mmap=False`` (IVF lists read into memory): a diagnostic, not the CLI's way.
  faiss-raw      ``faiss.read_index`` of the engine's index file, searched directly (labels only): the ceiling.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.peers_runner import K, protocol_stdout, serve_loop, text_handler, vector_handler


def threads() -> None:
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


class EngineText:
    def open(self, path: str) -> None:
        from retriever.search.searcher import Searcher

        threads()
        self.searcher = Searcher.load(Path(path), device="cpu")

    def search(self, texts: list[str]) -> list[list]:
        return [[[h.id, float(h.score), f"{h.title} {h.passage}".strip()] for h in hits] for hits in self.searcher.search(texts, K, batch_size=len(texts))]

    def search_one(self, text: str) -> list:
        return self.search([text])[0]


class EngineVectors:
    def __init__(self, mmap: bool | None = None) -> None:
        self.mmap = mmap
        self.options: dict = {}

    def open(self, path: str) -> None:
        from retriever.search.searcher import Searcher

        self.searcher = Searcher.load(Path(path), device="cpu", mmap=self.mmap)

    def knob(self, name: str | None, value) -> None:
        self.options = {"nprobe": value} if name == "nprobe" else {"ef_search": value} if name == "ef" else {}

    def search(self, queries: np.ndarray) -> list[list]:
        return [[[h.id, float(h.score)] for h in hits] for hits in self.searcher.search_vectors(queries, K, **self.options)]


class RawFaiss:
    """The engine's FAISS file read whole and searched directly: what any wrapper around it can at best reach."""

    def open(self, path: str) -> None:
        import faiss

        manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
        self.index = faiss.read_index(str(Path(path) / manifest["files"]["index"]))
        self.ivf = faiss.try_extract_index_ivf(self.index)
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "id_map") else self.index
        self.hnsw = inner.hnsw if hasattr(inner, "hnsw") else None

    def knob(self, name: str | None, value) -> None:
        if name == "nprobe" and self.ivf is not None:
            self.ivf.nprobe = value
        elif name == "ef" and self.hnsw is not None:
            self.hnsw.efSearch = max(value, K)

    def search(self, queries: np.ndarray) -> list[list]:
        scores, labels = self.index.search(queries, K)
        return [[[str(i), float(s)] for i, s in zip(lr, sr) if i >= 0] for lr, sr in zip(labels.tolist(), scores.tolist())]


def main() -> None:
    task, spec = sys.argv[1], json.loads(sys.argv[2])
    if task != "serve":
        raise SystemExit(f"unknown task {task!r}")
    proto = protocol_stdout()
    start = time.perf_counter()
    if spec["kind"] == "text":
        system = EngineText()
        system.open(spec["path"])
        system.search_one("warm up")  # loads the model
        handler = text_handler(system)
    else:
        system = {"engine": EngineVectors, "engine-inmem": lambda: EngineVectors(mmap=False), "faiss-raw": RawFaiss}[spec["system"]]()
        system.open(spec["path"])
        handler = vector_handler(system, np.ascontiguousarray(np.load(spec["queries"]), dtype=np.float32))
    proto.write(json.dumps({"ready": True, "open_seconds": time.perf_counter() - start}) + "\n")
    proto.flush()
    serve_loop(proto, handler)


if __name__ == "__main__":
    main()
