"""GPU placement of FAISS indexes: a transform of an index, kept in this one module.

A GPU that is asked for and missing is an error, never a silent fallback to the CPU.
"""

from __future__ import annotations

import logging
from typing import Literal

import faiss

from indexing.errors import DeviceError

log = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda"]


def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def resolve_index_device(device: str) -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to ``"cpu"`` or ``"cuda:N"`` for the FAISS index.

    Raises:
        DeviceError: a CUDA device was asked for and FAISS has no GPU (faiss-cpu, or no GPU present).
    """
    if device == "cpu":
        return "cpu"
    gpus = faiss_gpu_count()
    if device == "auto":
        return "cuda:0" if gpus else "cpu"
    if device.startswith("cuda"):
        ordinal = int(device.split(":", 1)[1]) if ":" in device else 0
        if gpus == 0:
            raise DeviceError(
                f"--device {device}: FAISS sees no GPU (install the [gpu] extra, faiss-gpu, on a machine with CUDA)"
            )
        if ordinal >= gpus:
            raise DeviceError(f"--device {device}: FAISS sees only {gpus} GPU(s)")
        return f"cuda:{ordinal}"
    raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")


def to_device(index: faiss.Index, device: str) -> faiss.Index:
    """Return ``index`` placed on ``device`` (``"cpu"`` or ``"cuda:N"``); the CPU index is returned as is.

    Index types without a GPU implementation (HNSW) stay on the CPU, with a log message. The shards of a
    ``faiss.IndexShards`` are spread over all GPUs (shard i on GPU ``(N + i) % count``) and searched in parallel.
    """
    if device == "cpu":
        return index
    ordinal = int(device.split(":", 1)[1])
    if isinstance(index, faiss.IndexShards):
        count = max(1, faiss_gpu_count())
        spread = faiss.IndexShards(index.d, True, False)
        for i in range(index.count()):
            spread.add_shard(to_device(faiss.downcast_index(index.at(i)), f"cuda:{(ordinal + i) % count}"))
        return spread
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = False
    try:
        gpu_index = faiss.index_cpu_to_gpu(resources, ordinal, index, options)
    except RuntimeError as exc:
        log.warning("index type has no GPU implementation, searching on the CPU: %s", str(exc).splitlines()[-1])
        return index
    gpu_index.referenced_objects = [resources]  # keep the resources alive with the index
    return gpu_index
