"""Choose a FAISS factory string for ``--index auto`` and the training-sample size of a factory."""

from __future__ import annotations

import math
import re

EXACT_LIMIT = 250_000
"""Up to this many vectors exact search (Flat) is fast enough on a CPU and is chosen by ``auto``."""

IVF_FLAT_LIMIT = 5_000_000
"""Up to this many vectors ``auto`` keeps full vectors in IVF lists; beyond it, product quantization."""


def choose_factory(num_vectors: int, dim: int, *, memory_bytes: int) -> str:
    """The factory string ``--index auto`` uses for ``num_vectors`` vectors of ``dim`` float32 values.

    Flat up to 250k vectors; IVF-Flat up to 5M if the vectors fit in half of ``memory_bytes``;
    IVF-PQ beyond that (``dim / 8`` bytes per vector, 4x sqrt(n) lists rounded to a power of two).
    """
    vector_bytes = num_vectors * dim * 4
    if num_vectors <= EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(num_vectors)))
    if num_vectors <= IVF_FLAT_LIMIT and vector_bytes <= memory_bytes // 2:
        return f"IVF{nlist},Flat"
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m > 0 and dim % m == 0)
    return f"IVF{nlist},PQ{m}"


def training_sample_size(factory: str) -> int:
    """How many vectors to train ``factory`` on: 0 for untrained types, else ~64 per IVF list (>= PQ's 256 x 39)."""
    nlist = ivf_lists(factory)
    needs_pq = re.search(r"PQ\d+", factory) is not None
    if not nlist and not needs_pq:
        return 0
    return max(64 * nlist, 10_000 if needs_pq else 0, 1)


def ivf_lists(factory: str) -> int:
    """Number of IVF lists in a factory string (0 when it has no IVF stage)."""
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else 0
