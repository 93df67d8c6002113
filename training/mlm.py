"""Masked-language modelling as an auxiliary loss of the shared trainer (BERT's recipe).

:func:`mlm_mask` picks the positions to predict (a pure function of the ids and a Generator);
:class:`MaskedLanguageModelling` is the head (dense -> GELU -> LayerNorm -> decoder tied to the input
embeddings) that the trainer calls on the query side's token embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.crops import TokenSpace

IGNORE = -100
"""Label of positions that are not predicted (``torch.nn.functional.cross_entropy``'s ignore index)."""


def mlm_mask(ids: Sequence[int], rng: np.random.Generator, space: TokenSpace, probability: float) -> tuple[list[int], list[int]]:
    """BERT masking: each non-special token is chosen with ``probability`` (at least one when there is any);
    a chosen token becomes the mask token 80% of the time, a random token 10%, itself 10%.

    Returns:
        ``(inputs, labels)``, both ``len(ids)`` long; ``labels[i]`` is the original id where chosen, else
        :data:`IGNORE`.

    Raises:
        ValueError: the token space has no mask token.
    """
    if space.mask_id is None:
        raise ValueError("masked-language modelling needs a tokenizer with a mask token")
    inputs = list(ids)
    labels = [IGNORE] * len(ids)
    candidates = [i for i, t in enumerate(ids) if t not in space.special_ids]
    if not candidates or probability <= 0:
        return inputs, labels
    draws = rng.random(len(candidates))
    chosen = [c for c, d in zip(candidates, draws) if d < probability]
    if not chosen:
        chosen = [candidates[int(rng.integers(len(candidates)))]]
    for position in chosen:
        labels[position] = inputs[position]
        roll = rng.random()
        if roll < 0.8:
            inputs[position] = space.mask_id
        elif roll < 0.9:
            inputs[position] = int(rng.integers(space.vocab_size))
    return inputs, labels


def mlm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (m, vocab) against ``targets`` (m,); 0 when ``m == 0``."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


class MaskedLanguageModelling(nn.Module):
    """The MLM head and loss, an auxiliary objective for :class:`training.trainer.Trainer`.

    Args:
        embeddings: the encoder's input embedding (its weight is the tied decoder).
        hidden: the encoder's hidden size.
        weight: factor of this loss in the total (contrastive + weight * MLM).
    """

    def __init__(self, embeddings: nn.Embedding, hidden: int, *, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.decoder_weight = embeddings.weight  # tied: the same Parameter as the input embedding
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))

    def forward(self, features: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Loss on the masked positions. ``features["token_embeddings"]`` (n, t, d); ``labels`` (n, t)."""
        tokens = features["token_embeddings"]  # (n, t, d)
        chosen = labels != IGNORE  # (n, t)
        hidden = self.norm(F.gelu(self.dense(tokens[chosen])))  # (m, d)
        logits = hidden @ self.decoder_weight.T + self.bias  # (m, vocab)
        return mlm_loss(logits, labels[chosen])

    def own_parameters(self) -> list[nn.Parameter]:
        """Parameters that are not the encoder's (everything but the tied decoder)."""
        return [p for name, p in self.named_parameters() if name != "decoder_weight"]
