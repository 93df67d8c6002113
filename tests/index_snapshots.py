"""Helpers for tests of concurrent and killed index writers: a tiny real index, and what a version holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.index_dir import open_index
from indexing.manifest import verify_files

QUERY_SEED = 1234


@dataclass(frozen=True)
class Snapshot:
    """What a reader sees in one version: its number, its documents and the top-10 of fixed query vectors."""

    version: int
    documents: dict[str, tuple[str, str]]  # id -> (title, text)
    hits: list[list[str]]
    counts: dict[str, int]


def snapshot(path: Path, *, checksums: bool = True) -> Snapshot:
    """Open the committed version at ``path`` (checking every file's checksum) and read it whole."""
    opened = open_index(path, verify=checksums)
    try:
        verify_files(path, opened.manifest, checksums=checksums)
        docs = {d.id: (d.title, d.text) for d in opened.docstore.iter_documents()}
        queries = np.random.default_rng(QUERY_SEED).normal(size=(5, opened.manifest.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        _, pids = opened.vectors.search(queries, 10)
        hits = []
        for row in pids:
            records, _ = opened.docstore.hit_records([int(p) for p in row], [0.0] * len(row))
            hits.append([r[0] for r in records])
        return Snapshot(opened.manifest.version, docs, hits, dict(opened.manifest.counts))
    finally:
        opened.close()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def corpus_records(prefix: str, count: int, *, start: int = 0, variant: str = "") -> list[dict]:
    """``count`` small documents ``{prefix}{i}`` with distinct texts (``variant`` changes every text)."""
    words = "dense retrieval vector index query passage document search encoder model token window".split()
    return [
        {"_id": f"{prefix}{i}", "title": f"{prefix} {i}",
         "text": " ".join(words[(i * 5 + j) % len(words)] for j in range(6 + i % 7)) + f" {variant}{prefix}{i}"}
        for i in range(start, start + count)
    ]
