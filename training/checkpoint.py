"""Checkpoints as safetensors + JSON (never pickle), written atomically.

Layout of ``<out>/checkpoints``::

    latest.json                   {"step": 300, "path": "step-0000300"}   (replaced last, atomically)
    step-0000300/
        model.safetensors         the trained encoder (sentence-transformers module state)
        key_model.safetensors     the MoCo key encoder (when a queue is used)
        optimizer.safetensors     AdamW state tensors, flattened as "<param index>.<name>"
        state.safetensors         MoCo queue keys, torch/numpy RNG states
        state.json                step, data position, scheduler, grad scaler, optimizer structure,
                                  python/numpy RNG scalars, queue pointers, evaluation history, config
    best/                         the best evaluated model as a sentence-transformers folder (with --eval)

A checkpoint folder is written under a temporary name and renamed into place; ``latest.json`` moves only
after that, so a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from indexing.errors import RetrieverError
from indexing.manifest import write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_JSON = "state.json"


# --- optimizer state <-> (tensors, JSON) --------------------------------------------------------------
def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and a JSON-able remainder."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer`: a dict ``optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# --- RNG states ------------------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's python, numpy and torch (CPU and CUDA) generator states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = cuda_state
    meta = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` took."""
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


# --- whole checkpoints -----------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """What a checkpoint holds, in memory.

    Attributes:
        models: ``{"model": module, "key_model": module}`` (saved/loaded in place).
        tensors: groups of plain tensors, ``{"optimizer": {...}, "state": {...}}``.
        meta: everything JSON-able (``state.json``).
    """

    models: dict[str, nn.Module]
    tensors: dict[str, dict[str, Tensor]]
    meta: dict[str, Any]


def save_checkpoint(root: Path, step: int, checkpoint: Checkpoint, *, keep: int = 1) -> Path:
    """Write ``root/step-NNNNNNN`` atomically, point ``latest.json`` at it, and keep the ``keep`` newest."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final, tmp = root / name, root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key, module in checkpoint.models.items():
        save_model(module, str(tmp / f"{key}.safetensors"))
    for key, group in checkpoint.tensors.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp / f"{key}.safetensors"))
    (tmp / STATE_JSON).write_text(json.dumps(checkpoint.meta) + "\n", encoding="utf-8")
    old = root / f".old-{name}"
    if final.exists():  # the same step saved again: swap, so a complete folder is always in place
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(root / LATEST, json.dumps({"step": step, "path": name}) + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s written", final)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder ``latest.json`` points at, or None when there is no checkpoint."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / json.loads(pointer.read_text(encoding="utf-8"))["path"]
    if not (folder / STATE_JSON).is_file():
        raise RetrieverError(f"{pointer} points at {folder}, which is incomplete")
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))


def load_checkpoint(folder: Path, models: dict[str, nn.Module], *, device: str = "cpu") -> Checkpoint:
    """Load the models in place (strict) and return the other tensor groups and the JSON state."""
    for key, module in models.items():
        path = folder / f"{key}.safetensors"
        if not path.is_file():
            raise RetrieverError(f"{folder}: checkpoint lacks {path.name}")
        missing, unexpected = load_model(module, str(path), strict=False, device=device)
        if missing or unexpected:
            raise RetrieverError(f"{path}: weights do not fit the model ({len(missing)} missing, {len(unexpected)} unexpected)")
    tensors = {p.stem: load_file(str(p)) for p in folder.glob("*.safetensors") if p.stem not in models and p.stem not in ("model", "key_model")}
    return Checkpoint(models=models, tensors=tensors, meta=read_meta(folder))
