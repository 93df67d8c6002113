"""A moving average of the weights (``--ema DECAY``, Polyak averaging with torch's swa_utils): updated after each
step; the average is what is evaluated, kept as the best step and exported."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.trainer_parts.base import TrainerPart


class EmaPart(TrainerPart):
    """``average = decay * average + (1 - decay) * weights`` over the parameters (buffers stay constant), the first
    update copying the weights; checkpointed as ``averaged_model``.

    Args:
        decay: in (0, 1).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.averaged: AveragedModel | None = None

    def setup(self, encoder: nn.Module) -> None:
        self.averaged = AveragedModel(encoder, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        for param in self.averaged.parameters():
            param.requires_grad_(False)

    def after_step(self, encoder: nn.Module) -> None:
        assert self.averaged is not None
        self.averaged.update_parameters(encoder)

    def evaluated(self, model: nn.Module) -> nn.Module:
        assert self.averaged is not None
        return self.averaged.module

    def modules(self) -> dict[str, nn.Module]:
        assert self.averaged is not None
        return {"averaged_model": self.averaged}
