"""Everything distributed lives here: process-group setup from torchrun's environment, and gathering.

How gradients stay right (the one place this is reasoned about): every process gathers the queries and keys
of all processes (:func:`gather`) and computes the *same* global loss ``L`` (the mean over the global batch).
The backward of :func:`gather` all-reduces (sums) the incoming gradients and keeps this process's slice, so the
gradient reaching local embeddings is ``world_size * dL/d(local)``. DDP then averages parameter gradients over
processes, dividing by ``world_size``: each parameter receives exactly ``dL/dθ`` -- what one process would get
with the whole global batch. Negatives (other processes' keys, hard negatives, the queue) are global.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), with nccl on CUDA and gloo on CPU.

    Returns a single-process :class:`DistInfo` when not launched by torchrun. Already-initialized groups are reused.
    """
    world_size = env_world_size()
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        # Rank 0 evaluates and writes while the others wait at a barrier: allow long evaluations.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
        log.info("joined %s process group: rank %d of %d", backend, rank, world_size)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def process_device(device: str, info: DistInfo) -> str:
    """Each process of a multi-GPU job takes the GPU of its local rank."""
    if info.enabled and device.startswith("cuda"):
        return f"cuda:{info.local_rank}"
    return device


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the gradients of all processes and keeps the local slice."""

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:  # local: (n, d) -> (world_size * n, d)
        world_size = dist.get_world_size()
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # grad: (world_size * n, d) -> (n, d)
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(local: Tensor, info: DistInfo) -> Tensor:
    """Concatenate every process's ``(n, d)`` tensor in rank order -> ``(world_size * n, d)``.

    Gradients flow back to the local part (see the module docstring for the scaling). Every process must pass
    the same ``n``. Identity when not distributed.
    """
    if not info.enabled:
        return local
    if not local.requires_grad:
        parts = [torch.empty_like(local) for _ in range(info.world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)
    return _GatherWithGrad.apply(local)


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every process's ``obj`` (picklable, small; in memory only), in rank order."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
