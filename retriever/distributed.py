"""Encode a build's shards on a Ray cluster (``retriever index build --engine ray``).

The driver plans the build (reads, chunks and commits documents shard by shard, see ``indexing.builder``);
this pool then runs a Ray Data pipeline over the numbers of the shards still missing their vectors:
``map_batches`` with a callable class, so each worker actor loads the model once (one actor per GPU when
the cluster has GPUs, else CPU actors), reads its shard's texts from the build's doc store and writes the
shard's vector file atomically. A failed task is retried by Ray (on a restarted actor when the actor died)
and rewrites the same file; a killed build resumes with only the missing shards.

The index directory must be on a filesystem every Ray node sees (always true for the local cluster;
NFS/Lustre for a multi-node cluster). ``import ray`` happens only inside these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import RetrieverError

log = logging.getLogger(__name__)

RETRIES = 3
"""Times Ray restarts a dead worker actor and retries its task before the build fails."""


class ShardWorker:
    """A Ray Data callable class: loads the encoder once, then encodes whole shards.

    ``__call__`` takes a batch ``{"shard": (m,) int64}`` and returns ``{"shard": (m,), "passages": (m,)}``
    after writing each shard's vectors with :func:`indexing.shards.write_shard`.
    """

    def __init__(self, encoder: dict[str, Any], work: str, batch_size: int, device: str, threads: int):
        import torch

        from retriever.encoders.base import encoder_from_manifest, recorded_precision

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.encoder = encoder_from_manifest(encoder, device=device, precision=recorded_precision(encoder))
        self.work = Path(work)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from indexing.builder import shard_inputs
        from indexing.shards import write_shard

        done = []
        for number in batch["shard"].tolist():
            pids, texts = shard_inputs(self.work / "docstore.sqlite", int(number))
            vectors = self.encoder.encode_documents(texts, batch_size=self.batch_size)
            write_shard(self.work / "shards", int(number), pids, vectors)
            done.append(len(pids))
        return {"shard": np.asarray(batch["shard"], dtype=np.int64), "passages": np.asarray(done, dtype=np.int64)}


class RayShardPool:
    """A :class:`indexing.builder.ShardPool` running :class:`ShardWorker` actors on Ray.

    Args:
        encoder: the encoder record (``Encoder.describe()``) the workers load.
        address: a Ray cluster address (``ray://...`` or ``host:port``); None = ``RAY_ADDRESS`` if set,
            else a local cluster started (and stopped) here.
        workers: actors in the pool (default: the cluster's GPUs, else 1 per CPU core).
        batch_size: encoder batch size inside each worker.
        worker: the callable class to run (a subclass of :class:`ShardWorker`).

    Raises:
        RetrieverError: Ray is not installed (the ``dist`` extra) or the cluster cannot be reached.
    """

    def __init__(
        self,
        encoder: dict[str, Any],
        *,
        address: str | None = None,
        workers: int | None = None,
        batch_size: int = 64,
        worker: type = ShardWorker,
    ):
        if workers is not None and workers < 1:
            raise RetrieverError(f"--ray-workers {workers} must be >= 1")
        self.encoder = encoder
        self.address = address
        self.workers = workers
        self.batch_size = batch_size
        self.worker = worker
        self.last_plan: dict[str, Any] = {}

    def encode_shards(self, work: Path, numbers: Sequence[int], done: Callable[[int], None]) -> None:
        """Encode shards ``numbers`` of the build in ``work`` (see :class:`indexing.builder.ShardPool`)."""
        ray = _import_ray()
        started = _connect(ray, self.address)
        try:
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
            workers = min(self.workers or gpus or cpus, len(numbers))
            threads = 1 if gpus else max(1, cpus // workers)
            self.last_plan = {"workers": workers, "gpus_per_worker": 1 if gpus else 0, "cpus_per_worker": threads}
            log.info("encoding %d shards with %d Ray workers (%s)", len(numbers), workers, "1 GPU each" if gpus else f"{threads} CPU each")
            data = ray.data.from_items([{"shard": int(n)} for n in numbers], override_num_blocks=len(numbers))
            encoded = data.map_batches(
                self.worker,
                fn_constructor_kwargs={
                    "encoder": self.encoder, "work": str(Path(work).resolve()), "batch_size": self.batch_size,
                    "device": "cuda" if gpus else "cpu", "threads": threads,
                },
                batch_size=1,
                batch_format="numpy",
                concurrency=workers,
                num_gpus=1 if gpus else 0,
                num_cpus=0 if gpus else threads,
                max_restarts=RETRIES,
                max_task_retries=RETRIES,
            )
            for row in encoded.iter_rows():
                done(int(row["shard"]))
        except Exception as exc:  # Ray wraps worker errors; show the first line of the cause
            if isinstance(exc, RetrieverError):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise RetrieverError(f"Ray encoding failed ({type(exc).__name__}): {first}; rerun with --resume to keep finished shards") from exc
        finally:
            if started:
                ray.shutdown()


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RetrieverError("--engine ray needs Ray Data: pip install 'retriever[dist]' (ray[data])") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Connect to ``address`` (or start a local cluster); True when this call started Ray."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RetrieverError(f"cannot connect to the Ray cluster at {address or 'RAY_ADDRESS/local'}: {str(exc).splitlines()[0]}") from None
    return True
