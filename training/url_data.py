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
    URLs that give no token are left out.

    Raises:
        RetrieverError: no URL gives a token.
    """
    return tokenize_labeled_urls(((url, 0) for url in urls), tokenizer, max_length=max_length, batch=batch)[0]


def tokenize_labeled_urls(urls: Iterable[tuple[str, int]], tokenizer: Any, *, max_length: int,
                          batch: int = 1024) -> tuple[ChunkStore, np.ndarray]:
    """:func:`tokenize_urls` of ``(url, class id)`` pairs; returns the store and the class ids ``(n,)`` int64
    of the URLs kept, aligned with the store.

    Raises:
        RetrieverError: no URL gives a token.
    """
    from retriever.encoders.url.tokens import url_text

    parts: list[np.ndarray] = []
    groups: list[int] = []
    pending: list[tuple[str, int]] = []

    def flush() -> None:
        tokenized = tokenize_texts(tokenizer, [text for text, _ in pending], max_length=max_length)
        for ids, (_, group) in zip(tokenized, pending):
            if ids:
                parts.append(np.asarray(ids, dtype=np.int32))
                groups.append(group)
        pending.clear()

    for url, group in urls:
        pending.append((url_text(url), group))
        if len(pending) >= batch:
            flush()
    flush()
    if not parts:
        raise RetrieverError("no URL gives a token to train on")
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return ChunkStore(np.concatenate(parts), offsets), np.asarray(groups, dtype=np.int64)


def url_classes(documents: Iterable[Any], field: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``(url, class id)`` per URL document, the class read from metadata ``field``; and the class names
    (ids index them, sorted).

    Raises:
        CorpusError: a record without ``field`` (naming its file and line).
        RetrieverError: fewer than two classes.
    """
    from indexing.errors import CorpusError

    pairs: list[tuple[str, str]] = []
    for doc in documents:
        value = doc.metadata.get(field)
        if value is None or str(value).strip() == "":
            raise CorpusError(doc.origin or doc.id, f"no {field!r} field (--label-field) in this record")
        pairs.append((doc.text, str(value).strip()))
    names = sorted({label for _, label in pairs})
    if len(names) < 2:
        raise RetrieverError(f"--label-field {field!r}: supervised training needs at least two classes, found {names}")
    ids = {name: i for i, name in enumerate(names)}
    return [(url, ids[label]) for url, label in pairs], names


class UrlData:
    """SimCSE examples over tokenized URLs; ``mask > 0`` adds BERT masking of the query view with MLM labels.

    With ``groups`` (a class id per URL, e.g. benign/phishing), every example carries its class, and the
    trainer's loss becomes supervised contrastive: URLs of the same class in a batch are positives.
    """

    negatives_per_example = 0

    def __init__(self, urls: ChunkStore, space: TokenSpace, *, mask: float, seed: int, groups: np.ndarray | None = None):
        if mask > 0 and space.mask_id is None:
            raise RetrieverError("masked-language modelling needs a tokenizer with a mask token")
        if groups is not None and len(groups) != len(urls):
            raise ValueError(f"{len(groups)} class ids for {len(urls)} URLs")
        self.groups = groups
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
            index = self.order(position)
            ids = self.urls[index]
            group = None if self.groups is None else int(self.groups[index])
            if self.mask > 0:
                query, labels = mlm_mask(ids, example_rng(self.seed, position), self.space, self.mask)
                out.append(Example(query, ids, query_labels=labels, group=group))
            else:
                out.append(Example(ids, ids, group=group))
        return out

    def describe(self) -> dict[str, Any]:
        lengths = self.urls.lengths()
        out = {"kind": "urls", "urls": len(self.urls), "mean_tokens": round(float(lengths.mean()), 1), "mask": self.mask}
        if self.groups is not None:
            out["urls_per_class"] = np.bincount(self.groups).tolist()
        return out
