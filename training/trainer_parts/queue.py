"""The MoCo queue (``--queue-size N``): the positives of past batches are extra negatives of every query."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from training.moco import KeyQueue
from training.trainer_parts.base import TrainerPart


class QueuePart(TrainerPart):
    """A FIFO of ``size`` key embeddings on ``device`` (its width read from the encoder at setup); checkpointed as
    the ``queue.keys`` tensor and the ``queue`` entry of ``state.json``."""

    def __init__(self, size: int, *, device: str):
        self.size, self.device = size, device
        self.queue: KeyQueue | None = None

    def setup(self, encoder: nn.Module) -> None:
        self.queue = KeyQueue(self.size, encoder.get_embedding_dimension(), device=self.device)

    def extra_negatives(self) -> Tensor | None:
        assert self.queue is not None
        return self.queue.negatives() if self.queue.filled else None  # (filled, d)

    def after_batch(self, positives: Tensor) -> None:
        assert self.queue is not None
        self.queue.enqueue(positives)

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        assert self.queue is not None
        tensors, meta = self.queue.state()
        return tensors, {"queue": meta}

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Raises ValueError when the checkpoint's queue has another size."""
        assert self.queue is not None
        self.queue.load({"queue.keys": tensors["queue.keys"]}, meta["queue"])
