"""Frozen keys (``--teacher-keys``, ``--query-only``): a frozen copy of the base model in eval mode embeds the keys.

In eval mode it embeds a text alike every time, so its keys are computed once per distinct token sequence (hard
negatives recur across epochs) and cached; the cache is cleared when full (crops rarely repeat). With
``query_only`` the documents keep the base model's embeddings: the evaluation searches them, and the output model
routes documents through the base (:func:`training.export.asymmetric_model`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.data import SpecialTokens, collate, tokenize_texts
from training.moco import make_key_encoder
from training.trainer_parts.base import TrainerPart


class FrozenKeysPart(TrainerPart):
    """The frozen key encoder (checkpointed as ``key_model``) and its cache of key embeddings.

    Args:
        special: the tokenizer's special tokens (how :func:`training.data.collate` frames token ids).
        max_tokens: truncation length of the keys.
        device: where keys are embedded.
        query_only: also route the documents of the evaluation and of the output model through the base.
    """

    embeds_keys = True
    CACHE_SIZE = 200_000
    """Most key embeddings held by the cache (200k x 384 float32 = 300 MB)."""

    def __init__(self, *, special: SpecialTokens, max_tokens: int, device: str, query_only: bool):
        self.special, self.max_tokens, self.device, self.query_only = special, max_tokens, device, query_only
        self.encoder: nn.Module | None = None
        self.cache: dict[tuple[int, ...], Tensor] = {}
        self.documents: Tensor | None = None

    def setup(self, encoder: nn.Module) -> None:
        self.encoder = make_key_encoder(encoder).eval()  # the frozen base model: fixed targets, no dropout

    def key_embeddings(self, keys: dict[str, Tensor], key_ids: list[list[int]]) -> Tensor | None:
        return self.embed(key_ids)

    def embed(self, key_ids: list[list[int]]) -> Tensor:
        """The frozen encoder's embeddings ``(len(key_ids), d)`` (float32) of token id lists, through the cache."""
        assert self.encoder is not None
        wanted = [self.key_of(ids) for ids in key_ids]
        missing = list(dict.fromkeys(w for w in wanted if w not in self.cache))
        if len(self.cache) + len(missing) > self.CACHE_SIZE:
            self.cache.clear()
        if missing:
            batch = collate([list(m) for m in missing], self.special, self.max_tokens)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            vectors = self.encoder(batch)["sentence_embedding"].float()  # (m, d)
            self.cache.update(zip(missing, vectors))
        return torch.stack([self.cache[w] for w in wanted])

    def key_of(self, ids: list[int]) -> tuple[int, ...]:
        """The cache key of a token id list: the ids that :func:`collate` keeps."""
        return tuple(ids[: self.special.room(self.max_tokens)])

    def prefill(self, tokenizer: Any, texts: list[str], vectors: np.ndarray, *, dev_texts: list[str] | None = None) -> int:
        """Seed the cache with known embeddings ``vectors`` ``(n, d)`` of ``texts`` (tokenized by ``tokenizer`` as the
        data feeds them). When every text of ``dev_texts`` (the evaluation corpus) is among ``texts``, their vectors
        become the evaluation's document embeddings. Returns the number of cached keys."""
        tensor = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)  # (n, d)
        ids = tokenize_texts(tokenizer, texts, max_length=self.max_tokens)
        self.cache.update(zip(map(self.key_of, ids), tensor))
        if dev_texts is not None:
            by_text = dict(zip(texts, tensor.cpu()))
            if all(text in by_text for text in dev_texts):
                self.documents = torch.stack([by_text[text] for text in dev_texts])
        return len(self.cache)

    def dev_documents(self, devset: Any) -> Tensor | None:
        """With ``query_only``: the evaluation corpus as the base embeds it ``(docs, d)`` (encoded once); else None."""
        if not self.query_only:
            return None
        if self.documents is None:
            assert self.encoder is not None
            self.documents = devset.encode_documents(self.encoder)
        return self.documents

    def output_model(self, model: nn.Module) -> nn.Module:
        if not self.query_only:
            return model
        from training.export import asymmetric_model

        assert self.encoder is not None
        return asymmetric_model(model, self.encoder)

    def modules(self) -> dict[str, nn.Module]:
        assert self.encoder is not None
        return {"key_model": self.encoder}
