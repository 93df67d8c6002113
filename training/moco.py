"""MoCo (He et al. 2020) as used by Contriever: a momentum key encoder and a FIFO queue of past keys."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class KeyQueue:
    """A fixed-size FIFO of key embeddings used as extra negatives.

    Starts empty and fills up (no random initial keys), so with nothing enqueued the loss is plain
    in-batch InfoNCE. Holds ``(size, dim)`` float32 on ``device``.
    """

    def __init__(self, size: int, dim: int, *, device: str | torch.device = "cpu"):
        if size < 1:
            raise ValueError(f"queue size must be >= 1 (got {size})")
        self.size = size
        self.keys = torch.zeros(size, dim, dtype=torch.float32, device=device)  # (size, d)
        self.pointer = 0
        self.filled = 0

    def negatives(self) -> Tensor:
        """The queued keys, ``(filled, d)`` (order does not matter to the loss)."""
        return self.keys[: self.filled]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Add ``(n, d)`` keys (detached), overwriting the oldest when full. ``n`` larger than the queue keeps the last ones."""
        keys = keys.detach().to(self.keys.dtype)[-self.size :]  # (min(n, size), d)
        n = keys.shape[0]
        end = self.pointer + n
        if end <= self.size:
            self.keys[self.pointer : end] = keys
        else:
            first = self.size - self.pointer
            self.keys[self.pointer :] = keys[:first]
            self.keys[: n - first] = keys[first:]
        self.pointer = end % self.size
        self.filled = min(self.size, self.filled + n)

    def state(self) -> tuple[dict[str, Tensor], dict[str, int]]:
        """Tensors and scalars of a checkpoint."""
        return {"queue.keys": self.keys.cpu()}, {"pointer": self.pointer, "filled": self.filled, "size": self.size}

    def load(self, tensors: dict[str, Tensor], scalars: dict[str, int]) -> None:
        if scalars["size"] != self.size or tensors["queue.keys"].shape != self.keys.shape:
            raise ValueError("checkpoint queue has another size")
        self.keys.copy_(tensors["queue.keys"])
        self.pointer = int(scalars["pointer"])
        self.filled = int(scalars["filled"])


@torch.no_grad()
def momentum_update(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """``key = momentum * key + (1 - momentum) * query`` for every parameter; buffers are copied."""
    for key_param, query_param in zip(key_encoder.parameters(), query_encoder.parameters()):
        key_param.mul_(momentum).add_(query_param.detach(), alpha=1.0 - momentum)
    for key_buffer, query_buffer in zip(key_encoder.buffers(), query_encoder.buffers()):
        key_buffer.copy_(query_buffer)


def make_key_encoder(query_encoder: nn.Module) -> nn.Module:
    """A frozen copy of the query encoder (no gradients)."""
    import copy

    key_encoder = copy.deepcopy(query_encoder)
    for param in key_encoder.parameters():
        param.requires_grad_(False)
    return key_encoder
