"""The service's refusals: every 4xx/5xx is ``{"error": "<one line>", "detail": [...]}`` (see :mod:`.app`).

:func:`add_error_handlers` maps exceptions to statuses (400 malformed JSON or a :class:`RetrieverError`, 409 BM25
not ready, 422 invalid fields, 503 overloaded, and Starlette's own 404/405/401), :class:`BodyLimit` refuses
bodies over the limit with 413 before anything parses them.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexing.errors import RetrieverError
from retriever.apps.service.batcher import Overloaded
from retriever.search.bm25_index import Bm25NotReadyError

RECEIVED = "retriever.received"
"""ASGI scope key: :func:`time.perf_counter` when :class:`BodyLimit` first saw the request (for Server-Timing)."""


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the service's error bodies."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [clean(e) for e in exc.errors()]
        bad_json = next((e for e in details if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            reason = str(bad_json.get("ctx", {}).get("error", "")) or "cannot parse the body"
            at = [p for p in bad_json.get("loc", ()) if isinstance(p, int)]
            return error(400, f"malformed JSON: {reason}" + (f" (character {at[0]})" if at else ""), details)
        first = details[0] if details else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = first.get("msg", "invalid request")
        return error(422, f"{where}: {message}" if where else message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RetrieverError)
    async def user_error(_: Request, exc: RetrieverError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(Bm25NotReadyError)
    async def no_bm25(_: Request, exc: Bm25NotReadyError) -> JSONResponse:
        return error(409, str(exc))  # a valid request the index cannot answer until its writer builds BM25

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return error(503, str(exc), headers={"Retry-After": "1"})


def clean(detail: dict[str, Any]) -> dict[str, Any]:
    """A validation error without the offending input (it may be a 1 MB query) and JSON-safe."""
    return jsonable_encoder({k: v for k, v in detail.items() if k not in ("input", "url")},
                            custom_encoder={Exception: str})


def error(status: int, message: str, detail: Optional[list] = None, headers: Optional[dict] = None) -> JSONResponse:
    """The error body ``{"error": message[, "detail": detail]}`` with ``status``."""
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413 before anything parses them.

    Hand-written because neither Starlette nor uvicorn limits body size. It reads the (small, bounded)
    body first, then replays it to the application; a ``Content-Length`` over the limit is refused
    without reading at all. It also notes when the request arrived (scope key :data:`RECEIVED`).
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECEIVED] = time.perf_counter()
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
        response = error(413, f"request body larger than {self.max_bytes:,} bytes")
        await response(scope, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.disconnect"}
