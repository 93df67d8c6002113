"""Optional behaviours of the training loop, one small part each (see :class:`TrainerPart` for the hooks), and
:func:`build_parts`, which composes the ones a configuration asks for.

Modules: ``base`` (the hooks), ``freeze``, ``adversarial``, ``momentum_keys``, ``frozen_keys``, ``queue``, ``ema``.
"""

from __future__ import annotations

from indexing.errors import RetrieverError
from training.config import TrainConfig
from training.data import SpecialTokens
from training.trainer_parts.adversarial import AdversarialPart, EmbeddingPerturbation
from training.trainer_parts.base import TrainerPart
from training.trainer_parts.ema import EmaPart
from training.trainer_parts.freeze import FreezePart
from training.trainer_parts.frozen_keys import FrozenKeysPart
from training.trainer_parts.momentum_keys import MomentumKeysPart
from training.trainer_parts.queue import QueuePart

__all__ = ["AdversarialPart", "EmaPart", "EmbeddingPerturbation", "FreezePart", "FrozenKeysPart", "MomentumKeysPart",
           "QueuePart", "TrainerPart", "build_parts"]


def build_parts(config: TrainConfig, *, special: SpecialTokens, device: str) -> list[TrainerPart]:
    """The parts ``config`` asks for, in the order their hooks run: freezing, the key encoder (frozen with
    ``teacher_keys`` or ``query_only``, else a momentum one with a queue), the queue, the weight average, and last
    the adversarial hook (so the copies made by the key encoder and the average carry none).

    Raises:
        RetrieverError: adversarial training asked for with frozen input embeddings.
    """
    frozen = bool(config.freeze_embeddings or config.freeze_layers)
    if config.adversarial and frozen:
        raise RetrieverError("--adversarial needs trainable input embeddings (drop --freeze-embeddings / --freeze-layers)")
    parts: list[TrainerPart] = []
    if frozen:
        parts.append(FreezePart(layers=config.freeze_layers))
    if config.teacher_keys or config.query_only:
        parts.append(FrozenKeysPart(special=special, max_tokens=config.max_tokens, device=device,
                                    query_only=config.query_only))
    elif config.queue_size:
        parts.append(MomentumKeysPart(config.momentum))
    if config.queue_size:
        parts.append(QueuePart(config.queue_size, device=device))
    if config.ema:
        parts.append(EmaPart(config.ema))
    if config.adversarial:
        parts.append(AdversarialPart(config.adversarial))
    return parts
