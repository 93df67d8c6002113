"""Vector shards on disk: ``NNNNNN.npy`` (``(n, dim)`` float32) beside ``NNNNNN.ids.npy`` (``(n,)`` int64).

Written atomically (temp file + rename) and read memory-mapped, so a build holds one shard in memory at a time.
No pickle: arrays are saved and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_shard(directory: Path, number: int, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write shard ``number``: ``ids`` ``(n,)`` int64 and ``vectors`` ``(n, dim)`` float32."""
    directory.mkdir(parents=True, exist_ok=True)
    _save(directory / f"{number:06d}.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    _save(directory / f"{number:06d}.ids.npy", np.ascontiguousarray(ids, dtype=np.int64))


def read_shard(directory: Path, number: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` of shard ``number``, memory-mapped read-only."""
    ids = np.load(directory / f"{number:06d}.ids.npy", mmap_mode="r", allow_pickle=False)
    vectors = np.load(directory / f"{number:06d}.npy", mmap_mode="r", allow_pickle=False)
    return ids, vectors


def iter_shards(directory: Path, count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shards ``0 .. count-1`` in order, each memory-mapped."""
    for number in range(count):
        yield read_shard(directory, number)


def sample_vectors(directory: Path, count: int, size: int, *, seed: int = 0) -> np.ndarray:
    """A uniform random sample of up to ``size`` vectors across shards ``0..count-1``, ``(m, dim)`` float32.

    Reads only the sampled rows (memory ~ ``size * dim * 4`` bytes).
    """
    rng = np.random.default_rng(seed)
    lengths = [read_shard(directory, n)[0].shape[0] for n in range(count)]
    total = sum(lengths)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, offset = [], 0
    for number, length in enumerate(lengths):
        local = chosen[(chosen >= offset) & (chosen < offset + length)] - offset
        if len(local):
            parts.append(np.asarray(read_shard(directory, number)[1][local], dtype=np.float32))
        offset += length
    return np.vstack(parts)
