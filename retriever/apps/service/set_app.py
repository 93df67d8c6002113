"""The HTTP API of a distributed set service: ``retriever serve``'s API (same endpoints, limits, auth, error
shapes; :mod:`retriever.apps.service.app` supplies the handlers and schemas) plus missing-shard handling.

``POST /search`` takes one more field, ``allow_partial`` (default false). A shard that does not answer within
the shard timeout makes the request a 503 with ``Retry-After`` naming the missing shards; with
``"allow_partial": true`` it is a 200 whose body adds ``"missing_shards": ["shard-001", ...]`` (present, and
empty, on every answer to a request that allows partial results).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint's annotations (see app.py).

import logging
from contextlib import asynccontextmanager
from typing import Any, Optional, Union

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field, create_model

from retriever.apps.service.app import BodyLimit, _add_error_handlers, _error, _key_checker, _package_version
from retriever.apps.service.batcher import MicroBatcher
from retriever.apps.service.fanout import FanoutState, ShardsUnavailable
from retriever.apps.service.schemas import MODES, BatchResult, Error, Health, Info, Limits, QueryResult, request_model

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2


class SetInfo(Info):
    """:class:`Info` of a set: ``version`` is the set version; ``shards`` how many shard services answer."""

    shards: int
    shard_timeout_s: float


def create_set_app(state: FanoutState, *, limits: Limits = Limits(), api_key: Optional[str] = None, max_batch: int = 64,
                   max_wait_ms: float = 2.0, max_pending: int = 4096) -> FastAPI:
    """The service answering from ``state`` (arguments as :func:`retriever.apps.service.app.create_app`)."""
    batcher = MicroBatcher(lambda jobs: _run_batch(state, jobs), max_queries=max_batch, max_wait=max_wait_ms / 1000,
                           max_pending=max_pending)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="retriever", summary="Dense, BM25 and hybrid search over a sharded index set.",
                  version=_package_version(), lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.index = state
    _add_error_handlers(app)

    @app.exception_handler(ShardsUnavailable)
    async def unavailable(_: Any, exc: ShardsUnavailable) -> JSONResponse:
        return _error(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    guarded = [Depends(_key_checker(api_key))] if api_key else []
    errors: dict[Union[int, str], dict[str, Any]] = {code: {"model": Error, "description": why} for code, why in [
        (400, "Malformed JSON, or an option this set cannot serve."), (409, "bm25/hybrid without a current BM25 index."),
        (413, "Request body larger than the limit."), (422, "A field is missing, unknown or outside its limits."),
        (503, "Too many queries queued, or a shard did not answer within the shard timeout; retry.")]}
    if api_key:
        errors[401] = {"model": Error, "description": "Missing or wrong API key."}
    SearchRequest = create_model("SearchRequest", __base__=request_model(limits), allow_partial=(
        bool, Field(False, description="Answer from the shards that respond when some do not (naming them).")))

    @app.post("/search", response_model=Union[QueryResult, BatchResult], responses=errors, dependencies=guarded,
              summary="Top-k documents for one query or a batch of queries, over every shard.")
    async def search(body: SearchRequest) -> Any:  # type: ignore[valid-type]
        queries = [body.query] if body.query is not None else list(body.queries)
        key = (body.mode, body.k, tuple(sorted(body.filters.items())) if body.filters else (), body.allow_partial)
        hits, missing = await batcher.submit(key, queries)
        extra = {"missing_shards": [f"shard-{n:03d}" for n in missing]} if body.allow_partial else {}
        if body.query is not None:
            return JSONResponse({"query": body.query, "hits": hits[0], **extra})
        return JSONResponse({"results": [{"query": q, "hits": h} for q, h in zip(queries, hits)], **extra})

    @app.get("/health", response_model=Health, summary="Liveness, and the set version served (no API key needed).")
    async def health() -> Health:
        return Health(version=state.version)

    @app.get("/info", response_model=SetInfo, responses={k: v for k, v in errors.items() if k == 401},
             dependencies=guarded, summary="The served set (summed over shards) and the request limits.")
    async def info() -> SetInfo:
        await batcher.call(lambda: _refresh(state))
        return _info(state, limits, api_key, batcher)

    return app


def _info(state: FanoutState, limits: Limits, api_key: Optional[str], batcher: MicroBatcher) -> SetInfo:
    manifest = state.manifest
    return SetInfo(
        path=str(state.path), version=manifest.version, documents=manifest.counts.get("documents", 0),
        passages=manifest.counts.get("passages", 0), deleted_pending_compaction=manifest.counts.get("tombstones", 0),
        dim=manifest.dim, metric=manifest.metric, factory=manifest.factory,
        model=manifest.encoder.get("model") or manifest.encoder.get("path"), preset=manifest.encoder.get("preset"),
        chunking={k: int(v) for k, v in manifest.chunking.items()}, updated=manifest.updated, modes=list(MODES),
        limits=limits.as_dict(), api_key_required=bool(api_key),
        stats={"batches": batcher.batches, "queries": batcher.batched_queries, "reloads": state.reloads},
        shards=state.pinned.num_shards, shard_timeout_s=state.shard_timeout,
    )


def _run_batch(state: FanoutState, jobs: list[tuple[Any, list[str]]]) -> list[Any]:
    """Per job ``(hits as dicts per query, missing shard numbers)`` or the exception its search raised; jobs with
    equal options share one fan-out (queries encoded once per group)."""
    _refresh(state)
    groups: dict[Any, list[int]] = {}
    for i, (key, _) in enumerate(jobs):
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(jobs)
    for (mode, k, filters, allow_partial), members in groups.items():
        texts = [text for i in members for text in jobs[i][1]]
        try:
            answer = state.search(texts, k, mode=mode, filters=dict(filters) or None, allow_partial=allow_partial)
        except Exception as exc:  # ShardsUnavailable -> 503, RetrieverError -> 400, else 500
            for i in members:
                results[i] = exc
            continue
        at = 0
        for i in members:
            n = len(jobs[i][1])
            results[i] = ([[hit.to_dict() for hit in row] for row in answer.hits[at: at + n]], answer.missing)
            at += n
    return results


def _refresh(state: FanoutState) -> None:
    try:
        state.refresh()
    except Exception:  # noqa: BLE001 - keep serving the pinned version
        log.exception("re-reading %s failed; still serving set version %d", state.path, state.version)
