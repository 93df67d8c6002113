"""``retriever serve``: the HTTP query service (FastAPI + uvicorn) over one index directory."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from cli.common import console, user_errors
from indexing.errors import RetrieverError


@user_errors
def serve(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default; 0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="RETRIEVER_API_KEY", show_envvar=True,
        help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY) on /search and /info.",
    ),
    device: str = typer.Option("auto", "--device", help="Query encoder device: auto, cpu or cuda[:N]."),
    index_device: Optional[str] = typer.Option(None, "--index-device", help="FAISS index device (see retriever search)."),
    query_backend: str = typer.Option("auto", "--query-backend", help="auto (the index's ONNX query encoder when it has one, else torch), onnx or torch."),
    max_k: int = typer.Option(1000, "--max-k", help="Largest k a request may ask for."),
    max_queries: int = typer.Option(128, "--max-queries", help="Most queries in one request."),
    max_query_chars: int = typer.Option(2048, "--max-query-chars", help="Longest query, in characters."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest request body, in bytes."),
    max_batch: int = typer.Option(64, "--max-batch", help="Queries of concurrent requests searched together, at most."),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", help="How long a query may wait for others to batch with while the searcher is free (0: a batch starts the moment the searcher is free, with every query queued by then)."),
    bm25: bool = typer.Option(False, "--bm25", help="This service answers bm25/hybrid: check at start-up that the index has a current BM25 index (`retriever index bm25 INDEX` builds it; needs Java), open it now and keep it open across reloads (an index set: check every shard's, built by `retriever set bm25 SET`)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request (uvicorn's access log)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="An index set (retriever set build) is served on this Ray cluster with Ray Serve (default: RAY_ADDRESS, else a local one); see `retriever set serve` for its other options."),
    shard_timeout: float = typer.Option(5.0, "--shard-timeout", help="An index set: seconds a request waits for a missing shard before a 503."),
    noop_endpoint: bool = typer.Option(False, "--noop-endpoint", help="Also serve POST /noop (not in the schema): validates a /search body and answers {\"ok\": true} without searching (load tests' ceiling)."),
) -> None:
    """Serve an index over HTTP: POST /search, GET /health, GET /info (reloads after index add/delete)."""
    try:
        import uvicorn

        from retriever.apps.service.app import create_app
        from retriever.apps.service.schemas import Limits
        from retriever.apps.service.state import IndexState
    except ImportError as exc:
        raise RetrieverError(f"retriever serve needs the serve extra ({exc.name} is missing): pip install 'retriever[serve]'") from None
    if not 0 < port < 65536:
        raise RetrieverError(f"--port must be in 1..65535 (got {port})")
    if max_batch < 1 or max_wait_ms < 0:
        raise RetrieverError("--max-batch must be >= 1 and --max-wait-ms >= 0")
    try:
        limits = Limits(max_k=max_k, max_queries=max_queries, max_query_chars=max_query_chars, max_body_bytes=max_body_bytes)
    except ValueError as exc:
        raise RetrieverError(f"--{str(exc).replace('_', '-')}") from None
    if api_key is not None and not api_key.strip():
        raise RetrieverError("--api-key is empty")
    if not _loopback(host) and not api_key:
        console.print(f"[yellow]warning:[/] serving on {host} without an API key: anyone who can reach it can query it",
                      highlight=False)
    from indexing.set_manifest import is_index_set

    if is_index_set(index_dir):  # a set: one Ray Serve deployment per shard (retriever.apps.service.distributed)
        from retriever.apps.service.distributed import ServeOptions, deploy_set

        if bm25:  # as for one index: a missing or stale BM25 index is one line, before Ray starts
            from retriever.scale.set_hybrid import check_set_bm25

            check_set_bm25(index_dir)
        options = ServeOptions(address=ray_address, host=host, port=port, shard_timeout=shard_timeout, device=device,
                               index_device=index_device, query_backend=query_backend, limits=limits.as_dict(),
                               api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms)
        console.print(f"serving set {index_dir} on Ray at http://{host}:{port} (Ctrl-C stops)", highlight=False)
        deploy_set(index_dir, options, blocking=True)
        return
    if ray_address is not None:
        raise RetrieverError("--ray-address serves an index set (retriever set build); this is one index folder")
    if bm25:  # checked before the model loads: a missing or stale BM25 index is one line and exit 2
        from indexing.manifest import read_manifest
        from retriever.search.bm25_index import check_bm25

        check_bm25(index_dir, read_manifest(index_dir))
        console.print("opening BM25", highlight=False)
    state = IndexState(index_dir, device=device, index_device=index_device, bm25=bm25, query_backend=query_backend)
    console.print(f"serving {index_dir} (version {state.version}, {state.manifest.counts.get('documents', 0):,} documents) "
                  f"on http://{host}:{port}  (API key {'required' if api_key else 'off'})", highlight=False)
    app = create_app(state, limits=limits, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms, noop=noop_endpoint)
    try:
        # One process: the index and model are loaded once; requests in flight get 30 s to finish on shutdown.
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=30,
                    **_fast_http())
    finally:
        state.close()


def _fast_http() -> dict[str, str]:
    """uvicorn's C HTTP parser (httptools) and event loop (uvloop) when installed (the serve extra), else its pure-Python ones."""
    from importlib.util import find_spec

    return {"http": "httptools" if find_spec("httptools") else "h11", "loop": "uvloop" if find_spec("uvloop") else "asyncio"}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
