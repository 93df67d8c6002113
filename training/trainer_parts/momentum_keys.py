"""MoCo keys (``--queue-size N`` without frozen keys): a momentum copy of the encoder embeds the keys, in train
mode (dropout on keys, as Contriever), updated as ``key = m * key + (1 - m) * encoder`` before each step."""

from __future__ import annotations

from torch import Tensor, nn

from training.moco import make_key_encoder, momentum_update
from training.trainer_parts.base import TrainerPart


class MomentumKeysPart(TrainerPart):
    """The momentum key encoder (checkpointed as ``key_model``).

    Args:
        momentum: ``m`` in [0, 1).
    """

    embeds_keys = True

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.encoder: nn.Module | None = None

    def setup(self, encoder: nn.Module) -> None:
        self.encoder = make_key_encoder(encoder).train()

    def before_step(self, encoder: nn.Module) -> None:
        assert self.encoder is not None
        momentum_update(self.encoder, encoder, self.momentum)

    def key_embeddings(self, keys: dict[str, Tensor], key_ids: list[list[int]]) -> Tensor | None:
        assert self.encoder is not None
        return self.encoder(dict(keys))["sentence_embedding"]  # (n * (1 + h), d)

    def modules(self) -> dict[str, nn.Module]:
        assert self.encoder is not None
        return {"key_model": self.encoder}
