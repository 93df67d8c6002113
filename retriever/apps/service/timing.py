"""Where a request's time goes, and the fast JSON answers of ``POST /search``.

A search request carrying ``X-Server-Timing: 1`` gets a ``Server-Timing`` response header (the W3C header browsers'
developer tools show) with its spans, in milliseconds:

- ``parse``: from the request reaching the application to its job being queued (routing, JSON parsing, validation).
- ``wait``: queued until its batch began (the searcher was busy with the batch before).
- ``encode``, ``search``, ``hits``: its batch's query encoding (tokenizer and model), FAISS search with the hit
  records, and hit dictionaries, in the worker thread; ``batch``'s description is the batch's number of queries.
- ``return``: from the batch's end to the request's coroutine resuming (the hop back to the event loop).
- ``json``: the answer serialized.

Each batch's spans are also logged at DEBUG (logger ``retriever.apps.service.timing``). Answers are serialized
with orjson when it is installed (the ``serve`` extra), about 15 times faster than ``json.dumps`` for hits with text.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

try:
    import orjson
except ImportError:  # pragma: no cover - the serve extra installs it
    orjson = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ASK_HEADER = "x-server-timing"
"""Request header asking for the ``Server-Timing`` answer header (any non-empty value)."""


@dataclass
class BatchStages:
    """Seconds one batch spent per stage in the worker thread (shared by the answers of its jobs)."""

    queries: int = 0
    encode: float = 0.0
    search: float = 0.0
    hits: float = 0.0

    def log(self) -> None:
        """One DEBUG line per batch (a no-op unless DEBUG is on for this logger)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch of %d queries: encode %.1f ms, search %.1f ms, hits %.1f ms",
                      self.queries, self.encode * 1e3, self.search * 1e3, self.hits * 1e3)


@dataclass
class Answer:
    """A job's result: per query, its hits as JSON-ready dicts; and its batch's stages."""

    hits: list[list[dict[str, Any]]]
    stages: BatchStages = field(default_factory=BatchStages)


def server_timing(received: float | None, job: Any, stages: BatchStages, resumed: float, serialized: float) -> str:
    """The ``Server-Timing`` value of one request (see the module doc); ``job`` is its :class:`.batcher.Job`."""
    spans = [
        ("parse", job.arrived - received if received is not None else 0.0),
        ("wait", job.started - job.arrived),
        ("encode", stages.encode),
        ("search", stages.search),
        ("hits", stages.hits),
        ("return", resumed - job.finished),
        ("json", serialized - resumed),
    ]
    return ", ".join(f"{name};dur={seconds * 1e3:.3f}" for name, seconds in spans) + f', batch;desc="{stages.queries}"'


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON: orjson when installed, else (or for what orjson refuses, e.g. integers
    beyond 64 bits in metadata) the standard library, as Starlette's ``JSONResponse`` writes it."""
    if orjson is not None:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def json_response(content: Any, headers: dict[str, str] | None = None) -> Response:
    """A 200 ``application/json`` response of ``content`` serialized by :func:`dumps`."""
    return Response(dumps(content), media_type="application/json", headers=headers)


def now() -> float:
    """:func:`time.perf_counter` (the clock of every span)."""
    return time.perf_counter()
