"""Training data of the ``url`` objective: SimCSE pairs of one URL, the query view masked for MLM.

Both views hold the same tokens of ``url_text(url)`` (URL-aware pre-tokenization); they differ by dropout
(the encoder runs each view separately, in training mode) and, when masked-language modelling is on, by the
query view's BERT masking, whose targets are the examples' ``query_labels``. Deterministic per position,
like every :class:`training.data.TrainingData`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from indexing.errors import RetrieverError
from training.crops import TokenSpace
from training.data import ChunkStore, EpochOrder, Example, example_rng, tokenize_texts
from training.mlm import mlm_mask


def tokenize_urls(urls: Iterable[str], tokenizer: Any, *, max_length: int, batch: int = 1024) -> ChunkStore:
    """Token ids (no special tokens, truncated to ``max_length``) of ``url_text`` of every URL, in one flat store.

    Raises:
        RetrieverError: no URL gives a token.
    """
    from retriever.url_tokens import url_text

    parts: list[np.ndarray] = []
    pending: list[str] = []

    def flush() -> None:
        parts.extend(np.asarray(ids, dtype=np.int32) for ids in tokenize_texts(tokenizer, pending, max_length=max_length) if ids)
        pending.clear()

    for url in urls:
        pending.append(url_text(url))
        if len(pending) >= batch:
            flush()
    flush()
    if not parts:
        raise RetrieverError("no URL gives a token to train on")
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return ChunkStore(np.concatenate(parts), offsets)


class UrlData:
    """SimCSE examples over tokenized URLs; ``mask > 0`` adds BERT masking of the query view with MLM labels."""

    negatives_per_example = 0

    def __init__(self, urls: ChunkStore, space: TokenSpace, *, mask: float, seed: int):
        if mask > 0 and space.mask_id is None:
            raise RetrieverError("masked-language modelling needs a tokenizer with a mask token")
        self.urls = urls
        self.space = space
        self.mask = mask
        self.seed = seed
        self.order = EpochOrder(len(urls), seed)

    def __len__(self) -> int:
        return len(self.urls)

    def examples(self, start: int, count: int) -> list[Example]:
        out = []
        for position in range(start, start + count):
            ids = self.urls[self.order(position)]
            if self.mask > 0:
                query, labels = mlm_mask(ids, example_rng(self.seed, position), self.space, self.mask)
                out.append(Example(query, ids, query_labels=labels))
            else:
                out.append(Example(ids, ids))
        return out

    def describe(self) -> dict[str, Any]:
        lengths = self.urls.lengths()
        return {"kind": "urls", "urls": len(self.urls), "mean_tokens": round(float(lengths.mean()), 1), "mask": self.mask}
