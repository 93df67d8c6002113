"""Partial fine-tuning: keep a transformer's embeddings and its lowest layers fixed (``--freeze-layers N``).

The lower layers of a pretrained encoder hold general lexical and syntactic features; adapting only the upper ones
moves fewer weights away from the base and stops backpropagation at the first trained layer, so a step costs less.
Written by hand: transformers has no "freeze the first N blocks" helper, and the block list's attribute differs by
architecture (``encoder.layer`` in BERT and XLM-R, ``transformer.layer`` in DistilBERT, ``layers`` elsewhere).
"""

from __future__ import annotations

import logging

from torch import nn

from indexing.errors import RetrieverError

log = logging.getLogger(__name__)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder: the first ``nn.ModuleList`` named ``layer`` or
    ``layers``.

    Raises:
        RetrieverError: the model has no such list.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers") and len(module):
            return module
    raise RetrieverError(f"{type(model).__name__}: no list of transformer layers found to freeze")


def freeze_bottom_layers(model: nn.Module, count: int) -> int:
    """Set ``requires_grad=False`` on the input embeddings (the whole embeddings module where there is one:
    positions, token types and its norm too) and on the first ``count`` transformer blocks of ``model``.

    Returns the number of parameters (scalars) frozen.

    Raises:
        RetrieverError: ``count`` is negative or not below the number of blocks (nothing would be left to train).
    """
    blocks = transformer_blocks(model)
    if not 0 <= count < len(blocks):
        raise RetrieverError(f"--freeze-layers {count}: the model has {len(blocks)} layers; freeze 0 to {len(blocks) - 1}")
    embeddings = getattr(model, "embeddings", None)
    modules = [embeddings if isinstance(embeddings, nn.Module) else model.get_input_embeddings(), *blocks[:count]]
    frozen = 0
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
                frozen += param.numel()
    log.info("froze the embeddings and %d of %d layers (%d parameters)", count, len(blocks), frozen)
    return frozen
