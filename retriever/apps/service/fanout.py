"""The ingress side of a distributed set service: one pinned set version, queries encoded once, fanned out to
one shard service per shard, the shards' top-k merged exactly.

Transport-agnostic: a shard is any object with ``search.remote(manifest, vectors, texts, k, mode, filters)`` and
``prepare.remote(manifest)`` whose results have ``.result(timeout_s=...)`` (Ray Serve deployment handles; tests
may pass fakes). Nothing here imports Ray.

Versions: the state pins one ``set.json`` version and sends every shard the manifest of its shard in that
version, so a request is answered from one set version even while shards serve two. When ``set.json``
changes, :meth:`FanoutState.refresh` asks every shard to load the new version first, then swaps the pin.

Missing shards: a shard that fails or does not answer is asked again until ``shard_timeout`` seconds have
passed since the request's fan-out began; then the request fails with :class:`ShardsUnavailable` (HTTP 503 and
``Retry-After``), or, when the request allows partial results, is answered from the other shards and names
the missing ones. Never silently partial.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from indexing.errors import RetrieverError
from indexing.set_manifest import SET_FILE, SetManifest, read_set_manifest
from indexing.set_open import summary
from retriever.hits import Hit
from retriever.scale.merge import merge_hits
from retriever.scale.set_hybrid import fuse_lists

log = logging.getLogger(__name__)

RETRY_PAUSE = 0.2
"""Seconds between two tries of a shard that failed (within the shard timeout)."""


class ShardsUnavailable(Exception):
    """Some shards did not answer within the shard timeout (and the request did not allow partial results)."""

    def __init__(self, missing: Sequence[int], waited: float):
        self.missing = list(missing)
        names = ", ".join(f"shard-{n:03d}" for n in self.missing)
        super().__init__(f"{len(self.missing)} shard(s) did not answer within {waited:g}s: {names}; retry shortly")


class ShardVersionGone(RetrieverError):
    """A shard was asked for a version whose files a newer commit has removed; the ingress re-reads set.json."""


@dataclass
class Answer:
    """Merged hits per query and the shards that did not contribute (empty unless partial results were allowed)."""

    hits: list[list[Hit]]
    missing: list[int]


def _cause(exc: BaseException) -> BaseException:
    """The exception a shard raised, without Ray's wrapper: a remote error arrives as a RayTaskError that is also
    an instance of its cause's class (so ``except RetrieverError`` catches it) but whose text is the remote
    traceback; the cause keeps the one-line message of the service's error bodies."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RetrieverError) else exc


def signature(root: Path) -> Optional[tuple[int, int, int]]:
    """``(inode, mtime_ns, size)`` of ``set.json`` (None when unreadable): cheap change detection."""
    try:
        st = os.stat(Path(root) / SET_FILE)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class FanoutState:
    """What the ingress serves: the pinned set version, the query encoder and the shard handles.

    Has the shape :func:`retriever.apps.service.app.create_app` expects of an ``IndexState`` (``path``,
    ``manifest``, ``version``, ``reloads``, ``refresh``, ``searcher.search``). Not thread-safe: refresh and
    search from one thread (the service's batch thread).
    """

    def __init__(self, path: str | Path, handles: Sequence[Any], *, shard_timeout: float = 5.0, device: str = "cpu",
                 encoder: Any | None = None, query_backend: str = "auto"):
        """Raises IndexDirError when ``path`` holds no valid set, ValueError when the handles do not match its shards."""
        self.path = Path(path)
        self.handles = list(handles)
        self.shard_timeout = shard_timeout
        self.device = device
        self.query_backend = query_backend
        self._encoder = encoder
        self._signature = signature(self.path)
        self.pinned: SetManifest = read_set_manifest(self.path)
        if len(self.handles) != self.pinned.num_shards:
            raise ValueError(f"{len(self.handles)} shard handles for a set of {self.pinned.num_shards} shards")
        self.manifest = summary(self.pinned)
        self.reloads = 0
        self.searcher = self

    @property
    def version(self) -> int:
        return self.pinned.version

    @property
    def encoder(self) -> Any:
        """The query encoder, loaded on first use from shard 0 (every shard has the same model)."""
        if self._encoder is None:
            from retriever.encoders.query_backend import load_query_encoder

            self._encoder = load_query_encoder(self.pinned.shard_path(self.path, 0), self.pinned.shard_manifest(0),
                                               backend=self.query_backend, device=self.device)  # type: ignore[arg-type]
        return self._encoder

    def refresh(self, *, force: bool = False) -> bool:
        """Pin the committed set version when ``set.json`` changed (after every shard loaded it); True if it did.

        A shard that cannot load the new version within the shard timeout keeps the old pin (retried at the
        next batch); a request then meets that shard's failure as it would have anyway.
        """
        current = signature(self.path)
        if not force and (current == self._signature or current is None):
            return False
        fresh = read_set_manifest(self.path)
        if fresh.version == self.pinned.version:
            self._signature = current
            return False
        calls = [h.prepare.remote(fresh.shards[n]["manifest"]) for n, h in enumerate(self.handles)]
        deadline = time.monotonic() + self.shard_timeout
        try:
            for call in calls:
                call.result(timeout_s=max(0.01, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - any shard failure: keep serving the pinned version
            log.warning("set version %d not picked up yet (a shard could not load it: %s)", fresh.version, exc)
            return False
        log.info("serving %s set version %d (was %d)", self.path, fresh.version, self.pinned.version)
        self.pinned, self._signature = fresh, current
        self.manifest = summary(fresh)
        self.reloads += 1
        return True

    def search(self, texts: Sequence[str], k: int, *, mode: str = "dense", filters: Mapping[str, str] | None = None,
               allow_partial: bool = False) -> Answer:
        """Top-``k`` per query over every shard of the pinned version.

        Raises:
            ShardsUnavailable: a shard missing past the timeout (without ``allow_partial``).
            RetrieverError: what a shard refuses (e.g. bm25 without Java), or a bad mode.
        """
        from retriever.search.hybrid import DEFAULT_FUSION, check_options

        check_options(mode, DEFAULT_FUSION, None)
        vectors = self.encoder.encode_queries(list(texts), batch_size=64) if mode != "bm25" else None
        for attempt in range(2):
            try:
                return self._fan_out(vectors, list(texts), k, mode, dict(filters) if filters else None, allow_partial)
            except ShardVersionGone:
                if attempt or not self.refresh(force=True):
                    raise
        raise AssertionError("unreachable")

    def _fan_out(self, vectors: Optional[np.ndarray], texts: list[str], k: int, mode: str,
                 filters: Optional[dict[str, str]], allow_partial: bool) -> Answer:
        pinned, deadline = self.pinned, time.monotonic() + self.shard_timeout
        answers: dict[int, Any] = {}
        pending = list(range(pinned.num_shards))
        while pending:
            calls = {n: self.handles[n].search.remote(pinned.shards[n]["manifest"], vectors, texts, k, mode, filters)
                     for n in pending}
            failed = []
            for n, call in calls.items():
                try:
                    answers[n] = call.result(timeout_s=max(0.01, deadline - time.monotonic()))
                except RetrieverError as exc:  # a refusal (or ShardVersionGone), not an outage
                    raise _cause(exc) from None
                except Exception as exc:  # noqa: BLE001 - a dead, restarting or slow shard
                    log.info("shard %d did not answer (%s: %s)", n, type(exc).__name__, str(exc)[:200])
                    failed.append(n)
            pending = failed
            if not pending or time.monotonic() + RETRY_PAUSE >= deadline:
                break
            time.sleep(RETRY_PAUSE)
        if pending and not allow_partial:
            raise ShardsUnavailable(pending, self.shard_timeout)
        lists = [answers[n] for n in sorted(answers)]
        if not lists:
            return Answer([[] for _ in texts], pending)
        if mode == "hybrid":
            return Answer(fuse_lists([d for d, _ in lists], [s for _, s in lists], k), pending)
        return Answer(merge_hits(lists, k), pending)
