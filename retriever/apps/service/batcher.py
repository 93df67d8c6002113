"""Dynamic batching: the queries of concurrent requests are searched together, in one worker thread.

Encoding 32 queries in one forward pass costs far less than 32 passes of one query, and FAISS searches
a (q, d) block faster than q single rows. So requests do not search themselves: they queue a job and
await its future. One asyncio task drains the queue into batches and runs each batch in a single worker
thread (the event loop stays free to accept and answer requests meanwhile). A job waits for company at
most ``max_wait`` seconds after it arrived; under load the queue fills while the previous batch runs,
so batches grow without waiting at all.

Hand-written (about 100 lines): serving libraries with dynamic batching (Ray Serve, Triton) would bring
a cluster runtime or a model server for what one asyncio task does here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overloaded(Exception):
    """More queries are queued than the batcher accepts; the request should be retried later."""


@dataclass
class Job:
    """One request's queries, searched with the options ``key`` (jobs of equal keys share a search)."""

    key: Hashable
    queries: list[str]
    future: asyncio.Future
    arrived: float = field(default=0.0)


RunBatch = Callable[[Sequence[tuple[Hashable, list[str]]]], list[Any]]
"""``run([(key, queries), ...]) -> [result or Exception, ...]``, one entry per job, in order."""


class MicroBatcher:
    """Collects jobs into batches of up to ``max_queries`` queries and runs them with ``run`` in one thread.

    Args:
        run: searches a batch (called in the worker thread); returns one result or exception per job.
        max_queries: a batch is closed once it holds this many queries (one larger job runs alone).
        max_wait: seconds a job may wait for others before its batch starts (0: never wait).
        max_pending: queued queries beyond which :meth:`submit` raises :class:`Overloaded`.
    """

    def __init__(self, run: RunBatch, *, max_queries: int = 64, max_wait: float = 0.002, max_pending: int = 4096):
        if max_queries < 1 or max_wait < 0 or max_pending < 1:
            raise ValueError("max_queries and max_pending must be >= 1 and max_wait >= 0")
        self._run = run
        self.max_queries = max_queries
        self.max_wait = max_wait
        self.max_pending = max_pending
        self._jobs: deque[Job] = deque()
        self._queued = 0
        self._arrival = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.batched_queries = 0

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retriever-search")
        self._task = asyncio.create_task(self._drain(), name="retriever-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(Overloaded("the service is shutting down"))
        self._jobs.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, key: Hashable, queries: list[str]) -> Any:
        """Queue ``queries`` and wait for their result (raises what ``run`` returned as an exception)."""
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        if self._queued + len(queries) > self.max_pending and self._queued:
            raise Overloaded(f"{self._queued} queries are queued; retry shortly")
        loop = asyncio.get_running_loop()
        job = Job(key, queries, loop.create_future(), loop.time())
        self._jobs.append(job)
        self._queued += len(queries)
        self._arrival.set()
        return await job.future

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` in the worker thread, between batches (e.g. a reload that must not overlap a search)."""
        if self._executor is None:
            raise RuntimeError("the batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    # --- internals ------------------------------------------------------------------------------
    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            deadline = self._jobs[0].arrived + self.max_wait
            while self._queued < self.max_queries and (remaining := deadline - loop.time()) > 0:
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            live = [job for job in batch if not job.future.done()]  # a client that went away was cancelled
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._run, [(j.key, j.queries) for j in live])
            except Exception as exc:  # run() should return exceptions per job; this is a bug, reported to all
                log.exception("search batch failed")
                results = [exc] * len(live)
            self.batches += 1
            self.batched_queries += sum(len(j.queries) for j in live)
            for job, result in zip(live, results):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _take(self) -> list[Job]:
        """Pop the oldest jobs up to ``max_queries`` queries (at least one job)."""
        batch: list[Job] = []
        size = 0
        while self._jobs and (not batch or size + len(self._jobs[0].queries) <= self.max_queries):
            job = self._jobs.popleft()
            batch.append(job)
            size += len(job.queries)
        self._queued -= size
        return batch
