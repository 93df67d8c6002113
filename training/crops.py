"""Contriever's data augmentation as pure functions of token id lists and a numpy Generator.

Izacard et al. (2022) build a positive pair from one document by taking two *independent* random crops
of the same chunk (each a contiguous span of 10-50% of it), then perturb each crop with token deletion,
replacement or masking. Nothing here knows about tokenizers beyond a few ids passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenSpace:
    """What augmentations need from a tokenizer.

    Attributes:
        vocab_size: replacement tokens are drawn uniformly from ``[0, vocab_size)``.
        special_ids: ids never drawn as replacements (a draw that hits one keeps the original token).
        mask_id: the mask token; None when the tokenizer has none (masking is then an error).
    """

    vocab_size: int
    special_ids: frozenset[int] = frozenset()
    mask_id: int | None = None


def crop_span(length: int, rng: np.random.Generator, ratio_min: float, ratio_max: float) -> tuple[int, int]:
    """A random contiguous span ``[start, end)`` of a sequence of ``length`` tokens (``length >= 1``).

    The span keeps ``round(r * length)`` tokens with ``r ~ U[ratio_min, ratio_max]``, at least 1,
    at a uniformly random start.
    """
    if length < 1:
        raise ValueError("cannot crop an empty sequence")
    ratio = rng.uniform(ratio_min, ratio_max)
    size = min(length, max(1, int(round(ratio * length))))
    start = int(rng.integers(0, length - size + 1))
    return start, start + size


def delete_tokens(ids: Sequence[int], rng: np.random.Generator, p: float) -> list[int]:
    """Drop each token with probability ``p``; at least one token is always kept."""
    if p <= 0 or not ids:
        return list(ids)
    keep = rng.random(len(ids)) >= p
    if not keep.any():
        keep[int(rng.integers(0, len(ids)))] = True
    return [t for t, k in zip(ids, keep) if k]


def replace_tokens(ids: Sequence[int], rng: np.random.Generator, p: float, space: TokenSpace) -> list[int]:
    """Replace each token with probability ``p`` by one drawn uniformly from the vocabulary (specials excluded)."""
    if p <= 0 or not ids:
        return list(ids)
    hit = rng.random(len(ids)) < p
    draws = rng.integers(0, space.vocab_size, size=len(ids))
    return [int(d) if h and int(d) not in space.special_ids else t for t, h, d in zip(ids, hit, draws)]


def mask_tokens(ids: Sequence[int], rng: np.random.Generator, p: float, space: TokenSpace) -> list[int]:
    """Replace each token with probability ``p`` by the mask token."""
    if p <= 0 or not ids:
        return list(ids)
    if space.mask_id is None:
        raise ValueError("masking needs a tokenizer with a mask token")
    hit = rng.random(len(ids)) < p
    return [space.mask_id if h else t for t, h in zip(ids, hit)]


def augment(
    ids: Sequence[int], rng: np.random.Generator, space: TokenSpace, *, delete: float = 0.0, replace: float = 0.0, mask: float = 0.0
) -> list[int]:
    """Deletion, then replacement, then masking, each per token with its own probability."""
    out = delete_tokens(ids, rng, delete)
    out = replace_tokens(out, rng, replace, space)
    return mask_tokens(out, rng, mask, space)


def crop_pair(
    chunk: Sequence[int],
    rng: np.random.Generator,
    space: TokenSpace,
    *,
    ratio_min: float,
    ratio_max: float,
    delete: float = 0.0,
    replace: float = 0.0,
    mask: float = 0.0,
) -> tuple[list[int], list[int]]:
    """Two independently cropped and augmented views of one chunk: the (query, key) positive pair."""
    views = []
    for _ in range(2):
        start, end = crop_span(len(chunk), rng, ratio_min, ratio_max)
        views.append(augment(chunk[start:end], rng, space, delete=delete, replace=replace, mask=mask))
    return views[0], views[1]


def split_chunks(ids: Sequence[int], chunk_tokens: int, *, min_tokens: int = 8) -> list[list[int]]:
    """Cut a document's tokens into consecutive chunks of ``chunk_tokens``.

    A short tail (under ``min_tokens``) is dropped when the document has other chunks; a document shorter
    than 2 tokens gives no chunk (two crops of it would be identical).
    """
    chunks = [list(ids[i : i + chunk_tokens]) for i in range(0, len(ids), chunk_tokens)]
    if len(chunks) > 1 and len(chunks[-1]) < min_tokens:
        chunks.pop()
    return [c for c in chunks if len(c) >= 2]
