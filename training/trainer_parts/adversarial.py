"""Adversarial training (``--adversarial EPS``, FGM): after the clean pass, each example's input embeddings are
pushed by ``EPS`` along their normalized loss gradient and a second pass adds its gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from training.trainer_parts.base import TrainerPart


class EmbeddingPerturbation:
    """Forward hook on the input embedding: records its outputs (keeping their gradients), or adds deltas to them."""

    def __init__(self, embedding: nn.Module):
        self.outputs: list[Tensor] = []
        self.deltas: list[Tensor] | None = None
        self.handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        if self.deltas is not None:
            return self._add(output)
        if output.requires_grad:
            output.retain_grad()
            self.outputs.append(output)
        return None

    def _add(self, output: Tensor) -> Tensor:
        assert self.deltas is not None
        delta = self.deltas.pop(0)
        return output + delta.to(output.dtype)

    def prepare(self, epsilon: float) -> None:
        """Turn the recorded outputs' gradients into deltas of norm ``epsilon`` per example (rows of dim 0)."""
        deltas = []
        for output in self.outputs:
            grad = output.grad if output.grad is not None else torch.zeros_like(output)  # (n, t, d)
            norm = grad.float().flatten(1).norm(dim=1).clamp_min(1e-12)  # (n,)
            deltas.append((epsilon * grad.float() / norm.view(-1, *([1] * (grad.ndim - 1)))).detach())
        self.outputs, self.deltas = [], deltas

    def reset(self) -> None:
        self.outputs, self.deltas = [], None

    def remove(self) -> None:
        self.handle.remove()


class AdversarialPart(TrainerPart):
    """One perturbed pass after each clean one. Set up last: modules copied from the encoder (key encoder,
    weight average) must not carry the hook.

    Args:
        epsilon: norm of each example's perturbation of its input embeddings ``(t, d)``.
    """

    extra_passes = 1

    def __init__(self, epsilon: float):
        self.epsilon = epsilon
        self.perturbation: EmbeddingPerturbation | None = None

    def setup(self, encoder: nn.Module) -> None:
        self.perturbation = EmbeddingPerturbation(encoder[0].auto_model.get_input_embeddings())

    def after_pass(self, attempt: int) -> None:
        if attempt == 0:
            assert self.perturbation is not None
            self.perturbation.prepare(self.epsilon)

    def after_batch(self, positives: Tensor) -> None:
        assert self.perturbation is not None
        self.perturbation.reset()
