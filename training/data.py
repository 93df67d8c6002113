"""Training examples as a deterministic function of their position in the stream.

Example ``p`` (0-based, counted over the whole run and over all processes) is drawn from epoch ``p // n`` with
a permutation seeded by ``(seed, epoch)``, and its randomness (crops, augmentations, negative sampling) comes
from a Generator seeded by ``(seed, p)``. So a run resumes exactly from a position, and a batch is the same
whether one process or several (each taking a slice) read it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from indexing.documents import Document
from indexing.errors import RetrieverError
from training.config import CropConfig
from training.crops import TokenSpace, crop_pair, split_chunks

log = logging.getLogger(__name__)

_ORDER_STREAM = 1
_EXAMPLE_STREAM = 2


@dataclass(frozen=True)
class Example:
    """One training example as token ids without special tokens.

    Attributes:
        query: the anchor. key: its positive. negatives: hard negatives (the same count in every example).
        query_labels: per query token, the target of an auxiliary token-level loss (masked-language
            modelling) or -100 where there is none; None when the data has no such targets.
        group: a class id (supervised contrastive training): every key of the batch in the query's group is
            a positive of it, not only its own; None when the data has no classes.
        teacher: a teacher's scores of ``(key, *negatives)`` (soft labels for listwise distillation); None
            when the data has no teacher.
    """

    query: list[int]
    key: list[int]
    negatives: tuple[list[int], ...] = ()
    query_labels: list[int] | None = None
    group: int | None = None
    teacher: tuple[float, ...] | None = None


class TrainingData(Protocol):
    """A source of examples addressed by position (see the module docstring)."""

    negatives_per_example: int

    def __len__(self) -> int: ...

    def examples(self, start: int, count: int) -> list[Example]: ...

    def describe(self) -> dict[str, Any]: ...


class EpochOrder:
    """Maps a stream position to an item index: a fresh seeded permutation of ``n`` items each epoch."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise RetrieverError("no training examples")
        self.n = n
        self.seed = seed
        self._epoch = -1
        self._perm = np.arange(n)

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[offset])


def example_rng(seed: int, position: int) -> np.random.Generator:
    """The Generator of example ``position``'s randomness."""
    return np.random.default_rng([seed, _EXAMPLE_STREAM, position])


def token_space(tokenizer: Any) -> TokenSpace:
    """Vocabulary size, special ids and mask id of a Hugging Face tokenizer."""
    return TokenSpace(
        vocab_size=len(tokenizer),
        special_ids=frozenset(int(i) for i in tokenizer.all_special_ids),
        mask_id=tokenizer.mask_token_id,
    )


def tokenize_texts(tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
    """Token ids without special tokens, optionally truncated to ``max_length``."""
    if not texts:
        return []
    options: dict[str, Any] = {"add_special_tokens": False, "verbose": False}
    if max_length is not None:
        options.update(truncation=True, max_length=max_length)
    return [list(ids) for ids in tokenizer(list(texts), **options)["input_ids"]]


class ChunkStore:
    """Token chunks in one flat int32 array plus offsets (a few bytes per token, no object per chunk)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
        self.tokens = tokens  # (total_tokens,) int32
        self.offsets = offsets  # (chunks + 1,) int64; chunk i is tokens[offsets[i]:offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> list[int]:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]].tolist()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def chunk_corpus(docs: Iterable[Document], tokenizer: Any, chunk_tokens: int, *, batch: int = 512) -> ChunkStore:
    """Tokenize every document (title and text) and cut it into chunks of ``chunk_tokens``."""
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    pending: list[str] = []

    def flush() -> None:
        for ids in tokenize_texts(tokenizer, pending):
            for chunk in split_chunks(ids, chunk_tokens):
                parts.append(np.asarray(chunk, dtype=np.int32))
                lengths.append(len(chunk))
        pending.clear()

    for doc in docs:
        pending.append(doc.full_text())
        if len(pending) >= batch:
            flush()
    flush()
    if not parts:
        raise RetrieverError("the corpus gives no chunk of at least 2 tokens to crop")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ChunkStore(np.concatenate(parts), offsets)


class CropData:
    """Contriever's unsupervised pairs: two independent augmented crops of one chunk."""

    negatives_per_example = 0

    def __init__(self, chunks: ChunkStore, space: TokenSpace, crop: CropConfig, *, seed: int):
        if crop.mask > 0 and space.mask_id is None:
            raise RetrieverError("--mask needs a tokenizer with a mask token")
        self.chunks = chunks
        self.space = space
        self.crop = crop
        self.seed = seed
        self.order = EpochOrder(len(chunks), seed)

    def __len__(self) -> int:
        return len(self.chunks)

    def examples(self, start: int, count: int) -> list[Example]:
        out = []
        for position in range(start, start + count):
            chunk = self.chunks[self.order(position)]
            query, key = crop_pair(
                chunk, example_rng(self.seed, position), self.space,
                ratio_min=self.crop.ratio_min, ratio_max=self.crop.ratio_max,
                delete=self.crop.delete, replace=self.crop.replace, mask=self.crop.mask,
            )
            out.append(Example(query, key))
        return out

    def describe(self) -> dict[str, Any]:
        lengths = self.chunks.lengths()
        return {"kind": "crops", "chunks": len(self.chunks), "mean_chunk_tokens": round(float(lengths.mean()), 1)}


@dataclass(frozen=True)
class Pair:
    """A supervised pair: query text, positive text, and a pool of hard-negative texts to sample from.

    ``teacher_scores``, when given, holds a teacher's score of the positive then of each pool negative
    (``1 + len(negatives)`` floats).
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    teacher_scores: tuple[float, ...] | None = None


class PairData:
    """Supervised pairs; each example gets ``per_query`` negatives sampled from its pool (tokenized on the fly).

    Pairs whose pool is smaller than ``per_query`` are dropped (every example needs the same count so that
    batches gather evenly across processes).

    Documents recur across steps (a corpus document sits in many pools, positives return every epoch), so their
    token ids are memoized by text, up to ``DOCUMENT_CACHE_SIZE`` texts (then the memo starts over): with 16
    negatives of 256 tokens per query, tokenizing them anew cost more than a query-only training step.
    """

    DOCUMENT_CACHE_SIZE = 100_000

    def __init__(
        self,
        pairs: Sequence[Pair],
        tokenizer: Any,
        *,
        per_query: int,
        max_tokens: int,
        seed: int,
        query_prefix: str = "",
        document_prefix: str = "",
    ):
        kept = [p for p in pairs if len(p.negatives) >= per_query]
        self.dropped = len(pairs) - len(kept)
        if self.dropped:
            log.warning("%d of %d pairs have fewer than %d negatives and are skipped", self.dropped, len(pairs), per_query)
        if not kept:
            raise RetrieverError("no training pair left (too few negatives for --negatives-per-query)")
        self.pairs = kept
        self.tokenizer = tokenizer
        self.negatives_per_example = per_query
        self.max_tokens = max_tokens
        self.seed = seed
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.order = EpochOrder(len(kept), seed)
        self._document_ids: dict[str, np.ndarray] = {}  # text -> (t,) int32 token ids

    def __len__(self) -> int:
        return len(self.pairs)

    def _tokenize_documents(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` (truncated to ``max_tokens``), each distinct text tokenized once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._document_ids]
        if len(self._document_ids) + len(missing) > self.DOCUMENT_CACHE_SIZE:
            self._document_ids.clear()
            missing = list(dict.fromkeys(texts))
        for text, ids in zip(missing, tokenize_texts(self.tokenizer, missing, max_length=self.max_tokens)):
            self._document_ids[text] = np.asarray(ids, dtype=np.int32)
        return [self._document_ids[t].tolist() for t in texts]

    def examples(self, start: int, count: int) -> list[Example]:
        chosen = [(self.pairs[self.order(p)], example_rng(self.seed, p)) for p in range(start, start + count)]
        queries = [self.query_prefix + pair.query for pair, _ in chosen]
        documents: list[str] = []
        teachers: list[tuple[float, ...] | None] = []
        for pair, rng in chosen:
            documents.append(self.document_prefix + pair.positive)
            picks: list[int] = []
            if self.negatives_per_example:
                picks = [int(i) for i in rng.choice(len(pair.negatives), size=self.negatives_per_example, replace=False)]
                documents.extend(self.document_prefix + pair.negatives[i] for i in picks)
            scores = pair.teacher_scores
            teachers.append(None if scores is None else (scores[0], *(scores[1 + i] for i in picks)))
        query_ids = tokenize_texts(self.tokenizer, queries, max_length=self.max_tokens)
        doc_ids = self._tokenize_documents(documents)
        width = 1 + self.negatives_per_example
        return [
            Example(query_ids[i], doc_ids[i * width], tuple(doc_ids[i * width + 1 : (i + 1) * width]), teacher=teachers[i])
            for i in range(len(chosen))
        ]

    def describe(self) -> dict[str, Any]:
        pools = [len(p.negatives) for p in self.pairs]
        return {"kind": "pairs", "pairs": len(self.pairs), "dropped": self.dropped,
                "negatives_per_example": self.negatives_per_example, "mean_pool": round(float(np.mean(pools)), 1)}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids put around every input (``[CLS] ... [SEP]`` for BERT) and the padding id."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int

    @classmethod
    def of(cls, tokenizer: Any) -> "SpecialTokens":
        """Found by encoding a probe with and without special tokens (works for any tokenizer's template)."""
        probe = "retrieval"
        bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                pad = tokenizer.pad_token_id
                return cls(tuple(full[:start]), tuple(full[start + len(bare) :]), int(pad if pad is not None else 0))
        raise RetrieverError("cannot find where the tokenizer puts its special tokens")

    def room(self, max_tokens: int) -> int:
        """How many ids of a sequence fit in ``max_tokens`` beside the special tokens (at least 1)."""
        return max(1, max_tokens - len(self.prefix) - len(self.suffix))


def collate(sequences: Sequence[Sequence[int]], special: SpecialTokens, max_tokens: int) -> dict[str, Any]:
    """Wrap, truncate and right-pad token id lists into ``input_ids``/``attention_mask`` tensors ``(n, t)``.

    Each row is ``prefix + ids[:max_tokens - specials] + suffix``; ``t`` is the longest row.
    """
    import torch

    room = special.room(max_tokens)
    rows = [list(special.prefix) + list(ids[:room]) + list(special.suffix) for ids in sequences]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), special.pad_id, dtype=torch.long)  # (n, t)
    attention = torch.zeros((len(rows), width), dtype=torch.long)  # (n, t)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def collate_labels(labels: Sequence[Sequence[int]], special: SpecialTokens, max_tokens: int, width: int) -> Any:
    """Token labels laid out as :func:`collate` lays out their ids: ``(n, width)`` long, -100 on special
    tokens, truncated positions and padding."""
    import torch

    room = special.room(max_tokens)
    out = torch.full((len(labels), width), -100, dtype=torch.long)  # (n, t)
    for i, row in enumerate(labels):
        kept = list(row[:room])
        out[i, len(special.prefix) : len(special.prefix) + len(kept)] = torch.tensor(kept, dtype=torch.long)
    return out
