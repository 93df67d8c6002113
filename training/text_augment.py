"""Token-level augmentations of natural language (the docstring side of code-search pairs; ContraBERT).

Pure: text and a ``numpy.random.Generator`` in, text out; tokens are whitespace-separated words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_delete(text: str, rng: np.random.Generator, probability: float = 0.1) -> str:
    """Drop each whitespace-separated token with ``probability`` (at least one token stays)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= probability]
    return " ".join(kept or words[: 1])


def token_replace(text: str, rng: np.random.Generator, vocabulary: Sequence[str], probability: float = 0.1) -> str:
    """Replace each token with ``probability`` by a random word of ``vocabulary``."""
    if not vocabulary:
        return text
    return " ".join(vocabulary[int(rng.integers(len(vocabulary)))] if rng.random() < probability else w
                    for w in text.split())


def token_swap(text: str, rng: np.random.Generator, swaps: int = 1) -> str:
    """Swap ``swaps`` random pairs of tokens."""
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(swaps):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)

