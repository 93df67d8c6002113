"""The FastAPI application of ``retriever serve``.

Endpoints: ``POST /search`` (one query or a batch; dense, bm25 or hybrid), ``GET /health``,
``GET /info`` (the manifest summary and the limits), ``GET /openapi.json`` (the schema), ``/docs``.

Every refusal is a 4xx with a JSON body ``{"error": "<one line>", "detail": [...]}``: 400 malformed JSON
or an option the index cannot serve (e.g. bm25 without Java), 401 missing/wrong API key, 409 a bm25/hybrid
request while the index has no current BM25 index (the error names ``retriever index bm25 INDEX``; the
service never builds it), 413 body too large, 422 a field outside its limits, 503 too many queued queries
(retry). A 500 means a bug.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations, and the
# request model is built per application (its limits), so it must be a real object, not a string.

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any, Optional, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexing.errors import RetrieverError
from retriever.apps.service.batcher import MicroBatcher, Overloaded
from retriever.apps.service.schemas import MODES, BatchResult, Error, Health, Info, Limits, QueryResult, request_model
from retriever.apps.service.state import IndexState
from retriever.search.bm25_index import Bm25NotReadyError

log = logging.getLogger(__name__)

API_KEY_ENV = "RETRIEVER_API_KEY"
"""Environment variable ``retriever serve`` reads the API key from when ``--api-key`` is not given."""


def create_app(
    state: IndexState,
    *,
    limits: Limits = Limits(),
    api_key: Optional[str] = None,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_pending: int = 4096,
) -> FastAPI:
    """The service answering from ``state`` (which the caller owns and closes).

    Args:
        limits: what one request may ask for (see :class:`Limits`).
        api_key: when set, ``/search`` and ``/info`` need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
        max_batch, max_wait_ms, max_pending: micro-batching (see :class:`MicroBatcher`).
    """
    batcher = MicroBatcher(
        lambda jobs: _run_batch(state, jobs), max_queries=max_batch, max_wait=max_wait_ms / 1000, max_pending=max_pending
    )

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
    app.state.index = state
    app.state.batcher = batcher
    _add_error_handlers(app)
    guarded = [Depends(_key_checker(api_key))] if api_key else []
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
    SearchRequest = request_model(limits)

    @app.post(
        "/search",
        response_model=Union[QueryResult, BatchResult],
        responses=errors,
        dependencies=guarded,
        summary="Top-k documents for one query or a batch of queries.",
    )
    async def search(body: SearchRequest) -> Any:  # type: ignore[valid-type]
        """``{"query": "..."}`` answers ``{"query", "hits"}``; ``{"queries": [...]}`` answers ``{"results": [...]}``."""
        queries = [body.query] if body.query is not None else list(body.queries)
        key = (body.mode, body.k, tuple(sorted(body.filters.items())) if body.filters else ())
        hits = await batcher.submit(key, queries)
        # The hits are already plain dicts of the declared shape: skip re-validating them (throughput).
        if body.query is not None:
            return JSONResponse({"query": body.query, "hits": hits[0]})
        return JSONResponse({"results": [{"query": q, "hits": h} for q, h in zip(queries, hits)]})

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

    return app


def _run_batch(state: IndexState, jobs: list[tuple[Any, list[str]]]) -> list[Any]:
    """Search a batch in the worker thread: reload if the index changed, then one search per option set.

    Returns, per job, its hits as ``[[hit dict, ...] per query]`` or the exception its search raised.
    """
    _refresh(state)
    searcher = state.searcher
    groups: dict[Any, list[int]] = {}
    for i, (key, _) in enumerate(jobs):
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(jobs)
    for (mode, k, filters), members in groups.items():
        texts = [text for i in members for text in jobs[i][1]]
        try:
            found = searcher.search(texts, k, mode=mode, filters=dict(filters) or None)
        except Exception as exc:  # RetrieverError -> 400; anything else is a bug (500, logged by the handler)
            for i in members:
                results[i] = exc
            continue
        at = 0
        for i in members:
            n = len(jobs[i][1])
            results[i] = [[hit.to_dict() for hit in row] for row in found[at : at + n]]
            at += n
    return results


def _refresh(state: IndexState) -> None:
    """Reload a changed index; on an unexpected failure keep serving the loaded version (logged)."""
    try:
        state.refresh()
    except Exception:
        log.exception("reloading %s failed; still serving version %d", state.path, state.version)


def _key_checker(api_key: str):
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


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [_clean(e) for e in exc.errors()]
        bad_json = next((e for e in details if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            reason = str(bad_json.get("ctx", {}).get("error", "")) or "cannot parse the body"
            at = [p for p in bad_json.get("loc", ()) if isinstance(p, int)]
            return _error(400, f"malformed JSON: {reason}" + (f" (character {at[0]})" if at else ""), details)
        first = details[0] if details else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = first.get("msg", "invalid request")
        return _error(422, f"{where}: {message}" if where else message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RetrieverError)
    async def user_error(_: Request, exc: RetrieverError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Bm25NotReadyError)
    async def no_bm25(_: Request, exc: Bm25NotReadyError) -> JSONResponse:
        return _error(409, str(exc))  # a valid request the index cannot answer until its writer builds BM25

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return _error(503, str(exc), headers={"Retry-After": "1"})


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error without the offending input (it may be a 1 MB query) and JSON-safe."""
    return jsonable_encoder({k: v for k, v in error.items() if k not in ("input", "url")},
                            custom_encoder={Exception: str})


def _error(status: int, message: str, detail: Optional[list] = None, headers: Optional[dict] = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retriever")
    except PackageNotFoundError:
        return "0"


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413 before anything parses them.

    Hand-written because neither Starlette nor uvicorn limits body size. It reads the (small, bounded)
    body first, then replays it to the application; a ``Content-Length`` over the limit is refused
    without reading at all.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(scope, send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, send: Any) -> None:
        response = _error(413, f"request body larger than {self.max_bytes:,} bytes")
        await response(scope, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.disconnect"}
