"""The FastAPI application of ``retriever serve``.

Endpoints: ``POST /search`` (one query or a batch; dense, bm25 or hybrid), ``GET /health``,
``GET /info`` (the manifest summary and the limits), ``GET /openapi.json`` (the schema), ``/docs``.

Every refusal is a 4xx with a JSON body ``{"error": "<one line>", "detail": [...]}``: 400 malformed JSON
or an option the index cannot serve (e.g. bm25 without Java), 401 missing/wrong API key, 409 a bm25/hybrid
request while the index has no current BM25 index (the error names ``retriever index bm25 INDEX``; the
service never builds it), 413 body too large, 422 a field outside its limits, 503 too many queued queries
(retry). A 500 means a bug. (The handlers are in :mod:`retriever.apps.service.errors`.)

A search spends its time in the model: requests queue their queries for the batcher's worker thread, which
encodes and searches each batch as soon as it is free; answers are serialized with orjson, without
re-validating the hits. ``X-Server-Timing: 1`` on a request returns where its time went
(:mod:`retriever.apps.service.timing`).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations, and the
# request model is built per application (its limits), so it must be a real object, not a string.

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any, Optional, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.responses import Response

from retriever.apps.service.batcher import MicroBatcher
from retriever.apps.service.errors import RECEIVED, BodyLimit, add_error_handlers, clean, error
from retriever.apps.service.schemas import MODES, BatchResult, Error, Health, Info, Limits, QueryResult, request_model
from retriever.apps.service.state import IndexState
from retriever.apps.service.timing import ASK_HEADER, Answer, BatchStages, dumps, now, server_timing
from retriever.search.searcher import check_queries

log = logging.getLogger(__name__)

API_KEY_ENV = "RETRIEVER_API_KEY"
"""Environment variable ``retriever serve`` reads the API key from when ``--api-key`` is not given."""

NOOP_ANSWER = b'{"ok":true}'
"""What ``POST /noop`` answers (see :func:`create_app`'s ``noop``)."""

# Kept importable from here (retriever.apps.service.set_app and older callers use these names).
_add_error_handlers, _clean, _error = add_error_handlers, clean, error
__all__ = ["API_KEY_ENV", "BodyLimit", "create_app"]


def create_app(
    state: IndexState,
    *,
    limits: Limits = Limits(),
    api_key: Optional[str] = None,
    max_batch: int = 64,
    max_wait_ms: float = 0.0,
    max_pending: int = 4096,
    noop: bool = False,
) -> FastAPI:
    """The service answering from ``state`` (which the caller owns and closes).

    Args:
        limits: what one request may ask for (see :class:`Limits`).
        api_key: when set, ``/search`` and ``/info`` need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
        max_batch, max_wait_ms, max_pending: micro-batching (see :class:`MicroBatcher`; by default a batch starts
            the moment the searcher is free, with every query queued by then).
        noop: also serve ``POST /noop`` (not in the OpenAPI schema): it reads and validates a ``/search`` body like
            ``/search`` (same limits and key) and answers ``{"ok": true}`` without searching; load tests measure
            the HTTP stack's ceiling with it.
    """
    batcher = MicroBatcher(
        lambda jobs: _run_batch(state, jobs), max_queries=max_batch, max_wait=max_wait_ms / 1000, max_pending=max_pending
    )
    app = _application(batcher, limits)
    app.state.index = state
    app.state.batcher = batcher
    guarded = [Depends(_key_checker(api_key))] if api_key else []
    errors = _error_responses(api_key)
    search_request = request_model(limits)
    _add_search(app, batcher, search_request, errors, guarded)
    if noop:
        _add_noop(app, search_request, guarded)
    _add_health_and_info(app, state, batcher, limits, api_key, errors, guarded)
    return app


def _application(batcher: MicroBatcher, limits: Limits) -> FastAPI:
    """The FastAPI app: the batcher runs for its lifespan; bodies are limited; errors have the service's shape."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="retriever",
        summary="Dense, BM25 and hybrid search over one index directory.",
        version=_package_version(),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    add_error_handlers(app)
    return app


def _error_responses(api_key: Optional[str]) -> dict[Union[int, str], dict[str, Any]]:
    """The refusals ``/search`` documents in the OpenAPI schema."""
    errors: dict[Union[int, str], dict[str, Any]] = {
        code: {"model": Error, "description": why}
        for code, why in [
            (400, "Malformed JSON, or an option this index cannot serve (e.g. bm25 without Java)."),
            (409, "bm25/hybrid asked of an index without a current BM25 index (`retriever index bm25 INDEX` builds it)."),
            (413, "Request body larger than the limit."),
            (422, "A field is missing, unknown or outside its limits."),
            (503, "Too many queries queued; retry."),
        ]
    }
    if api_key:
        errors[401] = {"model": Error, "description": "Missing or wrong API key."}
    return errors


def _add_search(app: FastAPI, batcher: MicroBatcher, search_request: type[BaseModel],
                errors: dict[Union[int, str], dict[str, Any]], guarded: list) -> None:
    SearchRequest = search_request  # noqa: N806 - a class, used as the body's annotation

    @app.post(
        "/search",
        response_model=Union[QueryResult, BatchResult],
        responses=errors,
        dependencies=guarded,
        summary="Top-k documents for one query or a batch of queries.",
    )
    async def search(body: SearchRequest, request: Request) -> Any:  # type: ignore[valid-type]
        """``{"query": "..."}`` answers ``{"query", "hits"}``; ``{"queries": [...]}`` answers ``{"results": [...]}``."""
        queries = [body.query] if body.query is not None else list(body.queries)
        key = (body.mode, body.k, tuple(sorted(body.filters.items())) if body.filters else ())
        job = batcher.submit_job(key, queries)
        answer: Answer = await job.future
        resumed = now()
        # The hits are already plain dicts of the declared shape: no re-validation, one orjson call.
        if body.query is not None:
            content = dumps({"query": body.query, "hits": answer.hits[0]})
        else:
            content = dumps({"results": [{"query": q, "hits": h} for q, h in zip(queries, answer.hits)]})
        headers = None
        if request.headers.get(ASK_HEADER):
            headers = {"server-timing": server_timing(request.scope.get(RECEIVED), job, answer.stages, resumed, now())}
        return Response(content, media_type="application/json", headers=headers)


def _add_noop(app: FastAPI, search_request: type[BaseModel], guarded: list) -> None:
    SearchRequest = search_request  # noqa: N806

    @app.post("/noop", include_in_schema=False, dependencies=guarded)
    async def noop(body: SearchRequest) -> Response:  # type: ignore[valid-type]
        """A ``/search`` body read and validated, nothing searched: the HTTP stack's ceiling for load tests."""
        return Response(NOOP_ANSWER, media_type="application/json")


def _add_health_and_info(app: FastAPI, state: IndexState, batcher: MicroBatcher, limits: Limits, api_key: Optional[str],
                         errors: dict[Union[int, str], dict[str, Any]], guarded: list) -> None:
    @app.get("/health", response_model=Health, summary="Liveness, and the index version served (no API key needed).")
    async def health() -> Health:
        return Health(version=state.version)

    @app.get("/info", response_model=Info, responses={k: v for k, v in errors.items() if k == 401},
             dependencies=guarded, summary="The served index (manifest summary) and the request limits.")
    async def info() -> Info:
        await batcher.call(lambda: _refresh(state))  # between batches, in the search thread
        manifest = state.manifest
        return Info(
            path=str(state.path),
            version=manifest.version,
            documents=manifest.counts.get("documents", 0),
            passages=manifest.counts.get("passages", 0),
            deleted_pending_compaction=manifest.counts.get("tombstones", 0),
            dim=manifest.dim,
            metric=manifest.metric,
            factory=manifest.factory,
            model=manifest.encoder.get("model") or manifest.encoder.get("path"),
            preset=manifest.encoder.get("preset"),
            chunking={k: int(v) for k, v in manifest.chunking.items()},
            updated=manifest.updated,
            modes=list(MODES),
            limits=limits.as_dict(),
            api_key_required=bool(api_key),
            stats={"batches": batcher.batches, "queries": batcher.batched_queries, "reloads": state.reloads},
        )


def _run_batch(state: IndexState, jobs: list[tuple[Any, list[str]]]) -> list[Any]:
    """Search a batch in the worker thread: reload if the index changed, then one search per option set.

    Returns, per job, an :class:`Answer` (its hits as ``[[hit dict, ...] per query]``) or the exception its
    search raised.
    """
    _refresh(state)
    stages = BatchStages(queries=sum(len(queries) for _, queries in jobs))
    groups: dict[Any, list[int]] = {}
    for i, (key, _) in enumerate(jobs):
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(jobs)
    for (mode, k, filters), members in groups.items():
        texts = [text for i in members for text in jobs[i][1]]
        try:
            found = _search(state, texts, mode, k, dict(filters) or None, stages)
        except Exception as exc:  # RetrieverError -> 400; anything else is a bug (500, logged by the handler)
            for i in members:
                results[i] = exc
            continue
        started = now()
        at = 0
        for i in members:
            n = len(jobs[i][1])
            results[i] = Answer([[hit.to_dict() for hit in row] for row in found[at : at + n]], stages)
            at += n
        stages.hits += now() - started
    stages.log()
    return results


def _search(state: IndexState, texts: list[str], mode: str, k: int, filters: Optional[dict[str, str]],
            stages: BatchStages) -> list[list[Any]]:
    """``HybridSearcher.search``; a dense search is split in two calls so that encoding and search are timed apart."""
    searcher = state.searcher
    started = now()
    if mode != "dense":
        found = searcher.search(texts, k, mode=mode, filters=filters)
        stages.search += now() - started
        return found
    check_queries(texts)  # what HybridSearcher.search checks before a dense search (k and mode: the request model)
    dense = searcher.searcher
    vectors = dense.encoder.encode_queries(texts, batch_size=64)
    encoded = now()
    found = dense.search_vectors(vectors, k, filters=filters)
    stages.encode += encoded - started
    stages.search += now() - encoded
    return found


def _refresh(state: IndexState) -> None:
    """Reload a changed index; on an unexpected failure keep serving the loaded version (logged)."""
    try:
        state.refresh()
    except Exception:
        log.exception("reloading %s failed; still serving version %d", state.path, state.version)


def _key_checker(api_key: str):
    """The dependency that refuses requests without ``api_key`` (401, ``WWW-Authenticate: Bearer``)."""
    expected = api_key.encode()
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer API_KEY")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: API_KEY")

    async def check(
        credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
        key: Optional[str] = Depends(header),
    ) -> None:
        given = key if key is not None else (credentials.credentials if credentials is not None else None)
        if given is None:
            raise HTTPException(401, "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "wrong API key", headers={"WWW-Authenticate": "Bearer"})

    return check


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retriever")
    except PackageNotFoundError:
        return "0"
