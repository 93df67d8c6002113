"""Freezing (``--freeze-embeddings``, ``--freeze-layers N``): the input embeddings, and optionally the embeddings
module and the first N transformer blocks, keep their weights (no gradient, left out of the optimizer)."""

from __future__ import annotations

from torch import nn

from training.freezing import freeze_bottom_layers
from training.trainer_parts.base import TrainerPart


class FreezePart(TrainerPart):
    """Sets ``requires_grad=False`` at setup, before the optimizer collects the trainable parameters.

    Args:
        layers: transformer blocks frozen from the bottom, the whole embeddings module with them (0 = only the
            token embedding matrix).

    Raises (at setup): RetrieverError when ``layers`` leaves no block to train.
    """

    def __init__(self, *, layers: int = 0):
        self.layers = layers

    def setup(self, encoder: nn.Module) -> None:
        transformer = encoder[0].auto_model
        transformer.get_input_embeddings().weight.requires_grad_(False)
        if self.layers:
            freeze_bottom_layers(transformer, self.layers)
