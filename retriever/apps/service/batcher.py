"""Dynamic batching: the queries of concurrent requests are searched together, in one worker thread.

Encoding 32 queries in one forward pass costs far less than 32 passes of one query, and FAISS searches
a (q, d) block faster than q single rows. So requests do not search themselves: they queue a job and
await its future. One worker thread takes the queued jobs as a batch the moment it is free, runs it, hands
the results back to the event loop in one call, and takes the next batch straight away: the jobs that
arrived while it ran. The searcher is never idle while a job waits, and nothing waits on a timer
(``max_wait`` > 0 opts into holding a batch back for company, at most that long after its first job arrived).

Hand-written (about 150 lines): serving libraries with dynamic batching (Ray Serve, Triton) would bring
a cluster runtime or a model server for what one thread does here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overloaded(Exception):
    """More queries are queued than the batcher accepts; the request should be retried later."""


@dataclass
class Job:
    """One request's queries, searched with the options ``key`` (jobs of equal keys share a search).

    ``task`` set: not a search but a function to run in the worker thread between batches (:meth:`MicroBatcher.call`).
    ``arrived``, ``started`` and ``finished`` are :func:`time.perf_counter` readings: queued, its batch began and
    ended (in the worker thread, before the result was handed to the event loop).
    """

    key: Hashable
    queries: list[str]
    future: asyncio.Future
    arrived: float = field(default=0.0)
    started: float = field(default=0.0)
    finished: float = field(default=0.0)
    task: Optional[Callable[[], Any]] = None


RunBatch = Callable[[Sequence[tuple[Hashable, list[str]]]], list[Any]]
"""``run([(key, queries), ...]) -> [result or Exception, ...]``, one entry per job, in order."""


class MicroBatcher:
    """Collects jobs into batches of up to ``max_queries`` queries and runs them with ``run`` in one thread.

    Args:
        run: searches a batch (called in the worker thread); returns one result or exception per job.
        max_queries: a batch is closed once it holds this many queries (one larger job runs alone).
        max_wait: seconds a job may wait for others while the worker is free (0, the default: never; under
            load the jobs that arrive during one batch make the next, without waiting).
        max_pending: queued queries beyond which :meth:`submit` raises :class:`Overloaded`.
    """

    def __init__(self, run: RunBatch, *, max_queries: int = 64, max_wait: float = 0.0, max_pending: int = 4096):
        if max_queries < 1 or max_wait < 0 or max_pending < 1:
            raise ValueError("max_queries and max_pending must be >= 1 and max_wait >= 0")
        self._run = run
        self.max_queries = max_queries
        self.max_wait = max_wait
        self.max_pending = max_pending
        self._jobs: deque[Job] = deque()
        self._queued = 0
        self._ready = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.batched_queries = 0

    async def start(self) -> None:
        """Start the worker thread; results are handed back to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="retriever-search", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Let the running batch finish, fail the queued jobs (:class:`Overloaded`), join the thread."""
        with self._ready:
            self._closing = True
            left, self._jobs = list(self._jobs), deque()
            self._queued = 0
            self._ready.notify()
        for job in left:
            if not job.future.done():
                job.future.set_exception(Overloaded("the service is shutting down"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def submit(self, key: Hashable, queries: list[str]) -> Any:
        """Queue ``queries`` and wait for their result (raises what ``run`` returned as an exception)."""
        return await self._queue(Job(key, queries, self._future(), time.perf_counter()))

    def submit_job(self, key: Hashable, queries: list[str]) -> Job:
        """Queue ``queries`` and return the job: await ``job.future`` for the result (``job.started`` says when
        its batch began, ``job.finished`` when it ended). Raises :class:`Overloaded` at once when too many queries are queued."""
        job = Job(key, queries, self._future(), time.perf_counter())
        self._enqueue(job)
        return job

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` in the worker thread, between batches (e.g. a reload that must not overlap a search)."""
        return await self._queue(Job(None, [], self._future(), time.perf_counter(), task=func))

    # --- internals ------------------------------------------------------------------------------
    def _future(self) -> asyncio.Future:
        if self._thread is None or self._loop is None:
            raise RuntimeError("the batcher is not started")
        return self._loop.create_future()

    async def _queue(self, job: Job) -> Any:
        self._enqueue(job)
        return await job.future

    def _enqueue(self, job: Job) -> None:
        with self._ready:
            if job.queries and self._queued and self._queued + len(job.queries) > self.max_pending:
                raise Overloaded(f"{self._queued} queries are queued; retry shortly")
            self._jobs.append(job)
            self._queued += len(job.queries)
            self._ready.notify()

    def _work(self) -> None:
        """The worker thread: take a batch, run it, hand the results back, repeat until stopped."""
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.perf_counter()
            for job in batch:
                job.started = started
            if batch[0].task is not None:
                results = [_call(batch[0].task)]
            else:
                results = self._search(batch)
            finished = time.perf_counter()
            for job in batch:
                job.finished = finished
            try:
                self._loop.call_soon_threadsafe(_deliver, batch, results)  # type: ignore[union-attr]
            except RuntimeError:  # the event loop is closed: nobody waits for these results
                return

    def _search(self, batch: list[Job]) -> list[Any]:
        try:
            results = self._run([(job.key, job.queries) for job in batch])
        except Exception as exc:  # run() should return exceptions per job; this is a bug, reported to all
            log.exception("search batch failed")
            results = [exc] * len(batch)
        self.batches += 1
        self.batched_queries += sum(len(job.queries) for job in batch)
        return results

    def _take(self) -> list[Job] | None:
        """Wait for jobs, then pop the oldest up to ``max_queries`` queries (a :meth:`call` job alone); None: stop."""
        with self._ready:
            while True:
                while not self._jobs and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return None
                self._hold_for_company()
                self._drop_cancelled()
                if self._jobs:
                    break
            if self._jobs[0].task is not None:
                return [self._jobs.popleft()]
            batch: list[Job] = []
            size = 0
            while self._jobs and self._jobs[0].task is None and (not batch or size + len(self._jobs[0].queries) <= self.max_queries):
                job = self._jobs.popleft()
                batch.append(job)
                size += len(job.queries)
            self._queued -= size
            return batch

    def _hold_for_company(self) -> None:
        """With ``max_wait`` > 0, wait (lock released) until the batch is full or its first job waited that long."""
        if not self.max_wait:
            return
        deadline = self._jobs[0].arrived + self.max_wait
        while self._queued < self.max_queries and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._ready.wait(remaining)

    def _drop_cancelled(self) -> None:
        """Forget jobs whose client went away (their future was cancelled) before searching for them."""
        if any(job.future.done() for job in self._jobs):
            live = deque(job for job in self._jobs if not job.future.done())
            self._queued = sum(len(job.queries) for job in live)
            self._jobs = live


def _call(task: Callable[[], Any]) -> Any:
    try:
        return task()
    except Exception as exc:  # handed to the awaiting caller
        return exc


def _deliver(batch: list[Job], results: list[Any]) -> None:
    """In the event loop: resolve each job's future with its result or exception (a cancelled one is skipped)."""
    for job, result in zip(batch, results):
        if job.future.done():
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
