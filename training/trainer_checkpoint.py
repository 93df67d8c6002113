"""Checkpoints of a :class:`training.trainer.Trainer`: everything needed to continue a run exactly, written with
:mod:`training.checkpoint` (safetensors + ``state.json``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from indexing.errors import RetrieverError
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.distributed import barrier, gather_objects

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger(__name__)


def save_trainer(trainer: Trainer) -> Path:
    """Write a checkpoint of ``trainer``'s step (rank 0) and return its folder; every process takes part in gathering
    the RNG states."""
    rng_tensors, rng_meta = ckpt.capture_rng()
    everyone = gather_objects((rng_tensors, rng_meta), trainer.dist)
    path = trainer.root / f"step-{trainer.step:07d}"
    if trainer.dist.is_main:
        optim_tensors, optim_meta = ckpt.flatten_optimizer(trainer.optimizer.state_dict())
        state: dict[str, Tensor] = {}
        for rank, (tensors, _) in enumerate(everyone):
            state.update({f"rng.{rank}.{k}": v for k, v in tensors.items()})
        entries: dict[str, Any] = {"queue": None}  # null without a queue, as state.json always had it
        for part in trainer.parts:
            part_tensors, part_entries = part.state_dict()
            state.update(part_tensors)
            entries.update(part_entries)
        models = trainer_modules(trainer)
        meta = {
            "step": trainer.step,
            "position": trainer.step * trainer.config.accumulate * trainer.config.batch_size,
            "world_size": trainer.dist.world_size,
            "config": trainer.config.to_dict(),
            "optimizer": optim_meta,
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": [m for _, m in everyone],
            "queue": entries.pop("queue"),
            **entries,
            "history": trainer.history,
            "best": list(trainer.best) if trainer.best else None,
        }
        path = ckpt.save_checkpoint(trainer.root, trainer.step, ckpt.Checkpoint(models, {"optimizer": optim_tensors, "state": state}, meta),
                                    keep=trainer.config.keep_checkpoints)
    barrier(trainer.dist)
    return path


def restore_trainer(trainer: Trainer) -> None:
    """Put ``trainer`` back in the state of its latest checkpoint (weights, optimizer, schedule, parts, RNG, history).

    Raises RetrieverError when the checkpoint was made with other settings (see :meth:`TrainConfig.resume_key`)."""
    folder = ckpt.latest_checkpoint(trainer.root)
    assert folder is not None
    meta = ckpt.read_meta(folder)
    saved = TrainConfig.from_dict(meta["config"]).resume_key()
    wanted = trainer.config.resume_key()
    if saved != wanted:
        differ = sorted(k for k in wanted if saved.get(k) != wanted.get(k))
        raise RetrieverError(f"--resume: the checkpoint in {folder} was made with other settings ({', '.join(differ)})")
    loaded = ckpt.load_checkpoint(folder, trainer_modules(trainer), device=trainer.device)
    trainer.optimizer.load_state_dict(ckpt.unflatten_optimizer(loaded.tensors["optimizer"], meta["optimizer"]))
    trainer.scheduler.load_state_dict(meta["scheduler"])
    if meta["scaler"]:
        trainer.scaler.load_state_dict(meta["scaler"])
    state = loaded.tensors["state"]
    for part in trainer.parts:
        part.load_state_dict(state, meta)
    rank = trainer.dist.rank if trainer.dist.rank < len(meta["rng"]) else 0
    if meta["world_size"] != trainer.dist.world_size:
        log.warning("checkpoint made with %d processes, resumed with %d: dropout randomness differs", meta["world_size"], trainer.dist.world_size)
    prefix = f"rng.{rank}."
    ckpt.restore_rng({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, meta["rng"][rank])
    trainer.step = int(meta["step"])
    trainer.history = list(meta["history"])
    trainer.best = (float(meta["best"][0]), int(meta["best"][1])) if meta["best"] else None
    log.info("resumed from %s at step %d", folder, trainer.step)


def trainer_modules(trainer: Trainer) -> dict[str, nn.Module]:
    """The modules a checkpoint holds: the encoder, the auxiliary head, the parts' (key encoder, weight average)."""
    models: dict[str, nn.Module] = {"model": trainer.encoder}
    if trainer.auxiliary is not None:
        models["auxiliary"] = trainer.auxiliary
    for part in trainer.parts:
        models.update(part.modules())
    return models
