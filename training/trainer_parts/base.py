"""The hooks through which an optional behaviour (freezing, adversarial training, MoCo or frozen keys, a key queue,
a weight average) joins the training loop of :class:`training.trainer.Trainer`.

A part overrides the hooks it needs; the others do nothing. The trainer calls every part's hook in the order the
parts were composed (:func:`training.trainer_parts.build_parts`), around one optimizer step::

    setup(encoder)                       once, before DDP wrapping and before the optimizer collects parameters
    before_step(encoder)                 each optimizer step, before the gradients are zeroed
      key_embeddings(keys, key_ids)      each forward pass, under autocast, when the part ``embeds_keys``
      extra_negatives()                  each loss: more negatives beside the in-batch (and mined) keys
      after_pass(attempt)                after the backward of pass ``attempt`` (``1 + extra_passes`` per batch)
      after_batch(positives)             after the passes of each micro-batch, with the clean pass's positives
    after_step(encoder)                  after the optimizer and scheduler stepped

What is evaluated and exported goes through ``evaluated(model)`` then ``output_model(model)``, the evaluation may
search ``dev_documents(devset)``; checkpoints hold
``modules()`` (as ``<name>.safetensors``) and ``state_dict()`` (tensors beside the RNG states, entries of
``state.json``), put back by ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class TrainerPart:
    """An optional behaviour of the training loop; every hook defaults to doing nothing."""

    embeds_keys: bool = False
    """True for a part whose ``key_embeddings`` replace the trained encoder's keys (at most one part)."""
    extra_passes: int = 0
    """Forward/backward passes per micro-batch beside the clean one."""

    def setup(self, encoder: nn.Module) -> None:
        """Prepare on the trained ``encoder`` (a SentenceTransformer, on its device)."""

    def before_step(self, encoder: nn.Module) -> None:
        """Called before each optimizer step's forward passes."""

    def key_embeddings(self, keys: dict[str, Tensor], key_ids: list[list[int]]) -> Tensor | None:
        """Embeddings ``(len(key_ids), d)`` of the batch's keys (collated ``keys``, or their token ids), computed
        without gradients; only called when ``embeds_keys``."""
        return None

    def extra_negatives(self) -> Tensor | None:
        """More negatives ``(m, d)`` for every query (detached), or None."""
        return None

    def after_pass(self, attempt: int) -> None:
        """Called after the backward of pass ``attempt`` of a micro-batch (0 = the clean pass)."""

    def after_batch(self, positives: Tensor) -> None:
        """Called after a micro-batch with its clean pass's gathered positives ``(world * n, d)`` (detached)."""

    def after_step(self, encoder: nn.Module) -> None:
        """Called after the optimizer step."""

    def evaluated(self, model: nn.Module) -> nn.Module:
        """The model to evaluate and export instead of ``model`` (default: ``model``)."""
        return model

    def output_model(self, model: nn.Module) -> nn.Module:
        """The model to save for the evaluated ``model`` (default: ``model``)."""
        return model

    def dev_documents(self, devset: Any) -> Tensor | None:
        """Document embeddings ``(docs, d)`` the evaluation on ``devset`` (a :class:`training.dev_eval.DevSet`)
        searches instead of encoding its corpus with the evaluated model, or None."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        """Modules a checkpoint holds, by file stem (saved and loaded in place)."""
        return {}

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Checkpoint state: tensors (names unique across parts) and JSON-able entries of ``state.json``."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Put back what ``state_dict`` returned (``meta`` is the whole ``state.json``)."""
