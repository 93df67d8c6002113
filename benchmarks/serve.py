"""Throughput of ``retriever serve`` against its two ceilings, measured side by side in one run (loopback).

On the SciFact index (default model, whole documents, with its ONNX query encoder: ``benchmarks.cold_start``'s
cached index), with SciFact's queries in turn, single-query ``POST /search`` requests (dense, k=10):

- ceiling (a), the model: the in-process searcher, opened as the service opens it (same index and query
  backend), encoding and searching the same queries in batches of 32, back to back;
- ceiling (b), the HTTP stack: ``POST /noop`` of the same server (``--noop-endpoint``), which reads and validates
  the same bodies and answers without searching, under the same load generator and clients;
- the service: ``--clients`` connections for ``--duration`` seconds (the acceptance run: throughput at least
  0.85x the lower ceiling, zero errors, p50/p99 reported).

Each ceiling is measured before and after the service run (the mean is used), since the machine's load drifts.
Then ``--breakdown`` seconds of the same load with the Python generator asking every answer for its
``Server-Timing`` spans (where a request's time goes), and the bad requests of the acceptance with their status
codes and messages, followed by a health check. Load generator: ``wrk`` when installed (``apt-get install wrk``),
else Python asyncio streams (see :mod:`benchmarks.serve_load`).

    python -m benchmarks.serve [--duration 60] [--clients 32] [--quick] [--load-generator auto|wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.cold_start import scifact_index
from benchmarks.common import require_data, write_results
from benchmarks.serve_load import Server, generator, run_load

BATCH = 32
TARGET = 0.85


def read_queries(data: Path) -> list[str]:
    """The collection's query texts, in file order."""
    from indexing.formats.queries import read_queries as read

    return list(read(data / "queries.jsonl").values())


def in_process(index: Path, queries: list[str], seconds: float, k: int) -> dict[str, Any]:
    """Ceiling (a): the service's searcher alone (an :class:`IndexState`, opened as ``retriever serve`` opens it),
    ``BATCH`` queries per search call (dense, ``k``), back to back for ``seconds``."""
    from retriever.apps.service.state import IndexState

    state = IndexState(index, device="cpu")
    try:
        searcher = state.searcher
        searcher.search(queries[:BATCH], k, mode="dense")  # warm-up: first run, allocator
        done, at = 0, 0
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            batch = [queries[(at + i) % len(queries)] for i in range(BATCH)]
            at += BATCH
            assert all(len(hits) == k for hits in searcher.search(batch, k, mode="dense"))
            done += BATCH
        elapsed = time.perf_counter() - began
    finally:
        state.close()
    result = {"queries": done, "seconds": round(elapsed, 2), "throughput_qps": round(done / elapsed, 1),
              "ms_per_batch": round(elapsed / (done / BATCH) * 1e3, 1)}
    print(json.dumps({"ceiling_a": result}), flush=True)
    return result


def loaded(server: Server, kind: str, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """One load run against ``server``, with the mean batch size over it for ``/search`` (``/info`` stats)."""
    before = server.info()["stats"]
    result = run_load(kind, server.port, path, bodies, clients, seconds)
    after = server.info()["stats"]
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = round((after["queries"] - before["queries"]) / batches, 2) if batches else None
    print(json.dumps({path: result}), flush=True)
    return result


def breakdown(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """Mean ``Server-Timing`` spans (ms) of ``/search`` answers under ``clients`` Python connections, and the
    client-side latency they leave unexplained (uvicorn, event-loop queueing, socket and the client itself)."""
    from benchmarks.serve_load import timed_load

    result = asyncio.run(timed_load(port, "/search", bodies, clients, seconds))
    print(json.dumps({"breakdown": result}), flush=True)
    return result


def bad_requests(url: str) -> list[dict[str, Any]]:
    """The acceptance's bad requests: each must get a 4xx with a message."""
    import httpx

    json_headers = {"content-type": "application/json"}
    cases = [
        ("malformed JSON", {"content": b'{"query": "vitamin D', "headers": json_headers}),
        ("k=0", {"json": {"query": "vitamin D", "k": 0}}),
        ("k=10^6", {"json": {"query": "vitamin D", "k": 10**6}}),
        ("1 MB query", {"json": {"query": "a" * 1_000_000}}),
        ("1 MB query (over the body limit)", {"json": {"query": "a" * (1 << 20)}}),
        ("unknown mode", {"json": {"query": "vitamin D", "mode": "sparse"}}),
    ]
    out = []
    for name, kwargs in cases:
        response = httpx.post(f"{url}/search", timeout=60, **kwargs)
        try:
            message = response.json().get("error")
        except ValueError:
            message = None
        out.append({"request": name, "status": response.status_code, "error": message})
    return out


def measure(args: argparse.Namespace, index: Path, queries: list[str], kind: str) -> dict[str, Any]:
    """Ceilings before, the service, ceilings after (reversed), the breakdown, the bad requests."""
    bodies = [json.dumps({"query": q, "k": args.k}).encode() for q in queries]
    a_before = in_process(index, queries, args.ceiling_seconds, args.k)
    server = Server(index, "--noop-endpoint")
    try:
        info = server.info()
        run_load(kind, server.port, "/search", bodies, args.clients, 3)  # warm-up (first batches, allocator)
        b_before = loaded(server, kind, "/noop", bodies, args.clients, args.ceiling_seconds)
        service = loaded(server, kind, "/search", bodies, args.clients, args.duration)
        b_after = loaded(server, kind, "/noop", bodies, args.clients, args.ceiling_seconds)
        split = breakdown(server.port, bodies, args.clients, args.breakdown) if args.breakdown else None
        bad = bad_requests(server.url)
        alive = server.alive()
    finally:
        server.stop()
    a_after = in_process(index, queries, args.ceiling_seconds, args.k)
    return {"info": info, "a": [a_before, a_after], "b": [b_before, b_after], "service": service,
            "breakdown": split, "bad_requests": bad, "alive_after_bad_requests": alive}


def main() -> None:
    """Parse the options, measure, write ``results/serve.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="Seconds of the service run.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent connections.")
    parser.add_argument("--ceiling-seconds", type=float, default=20, help="Seconds of each ceiling measurement.")
    parser.add_argument("--breakdown", type=float, default=15, help="Seconds of the Server-Timing run (0: none).")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--load-generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--quick", action="store_true", help="10 s service run, 5 s ceilings and breakdown (smoke test).")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.ceiling_seconds, args.breakdown = 10, 5, min(args.breakdown, 5)
    kind = generator(args.load_generator)
    data = require_data("scifact")
    index = scifact_index(data)
    queries = read_queries(data)
    load_before = os.getloadavg()
    m = measure(args, index, queries, kind)
    results = summarize(args, kind, m, load_before, os.getloadavg())
    write_results("serve", results, markdown(results))
    print(markdown(results))


def summarize(args: argparse.Namespace, kind: str, m: dict[str, Any], load_before: tuple, load_after: tuple) -> dict[str, Any]:
    """The result record: ceilings (mean of before and after), the service, its ratio to the lower ceiling."""
    a = sum(r["throughput_qps"] for r in m["a"]) / 2
    b = sum(r["throughput_rps"] for r in m["b"]) / 2
    service = m["service"]
    ratio = service["throughput_rps"] / min(a, b)
    info = m["info"]
    return {
        "index": info["path"], "collection": "scifact", "documents": info["documents"], "factory": info["factory"],
        "model": info["model"], "k": args.k, "clients": args.clients, "duration_s": args.duration,
        "load_generator": kind, "batch": BATCH,
        "ceiling_a_in_process": {"runs": m["a"], "throughput_qps": round(a, 1)},
        "ceiling_b_noop": {"runs": m["b"], "throughput_rps": round(b, 1)},
        "service": service, "ratio_to_lower_ceiling": round(ratio, 3), "breakdown": m["breakdown"],
        "bad_requests": m["bad_requests"], "alive_after_bad_requests": m["alive_after_bad_requests"],
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "acceptance": {
            f"throughput_at_least_{TARGET}x_lower_ceiling": ratio >= TARGET,
            "zero_errors": service["errors"] == 0,
            "bad_requests_all_4xx_with_message": all(400 <= x["status"] < 500 and x["error"] for x in m["bad_requests"]),
            "alive_after_bad_requests": m["alive_after_bad_requests"],
        },
    }


def markdown(r: dict[str, Any]) -> str:
    """``results/serve.md``: the three throughputs, the ratio, the breakdown, the bad requests."""
    s, a, b = r["service"], r["ceiling_a_in_process"], r["ceiling_b_noop"]
    runs = lambda c, key: " / ".join(f"{x[key]:.1f}" for x in c["runs"])  # noqa: E731
    lines = [
        "# Query service under load (`retriever serve`, loopback)",
        "",
        f"{r['collection']} index ({r['documents']:,} documents, {r['factory']}, {r['model']}, ONNX query encoder), "
        f"{r['clients']} clients sending single-query `POST /search` requests (dense, k={r['k']}) for "
        f"{r['duration_s']:.0f} s, load generator `{r['load_generator']}` on the same "
        f"{os.cpu_count()} CPUs. Load average {r['load_average']['before'][0]:.1f} before, "
        f"{r['load_average']['after'][0]:.1f} after (other jobs shared the machine).",
        "",
        "| what | throughput | p50 | p99 | errors | mean batch |",
        "|---|---:|---:|---:|---:|---:|",
        f"| (a) in-process searcher, batches of {r['batch']} (before / after) | {a['throughput_qps']:.1f} queries/s "
        f"({runs(a, 'throughput_qps')}) | | | | {r['batch']} |",
        f"| (b) `POST /noop`, same server and load (before / after) | {b['throughput_rps']:.1f} req/s "
        f"({runs(b, 'throughput_rps')}) | {_ms(b['runs'][0]['p50_ms'])} | {_ms(b['runs'][0]['p99_ms'])} | "
        f"{sum(x['errors'] for x in b['runs'])} | |",
        f"| **service**, `POST /search` | **{s['throughput_rps']:.1f} req/s** | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | "
        f"{s['errors']} | {s['mean_batch']} |",
        "",
        f"Service / lower ceiling: **{r['ratio_to_lower_ceiling']:.2f}x** (target {TARGET}x).",
    ]
    if r["breakdown"]:
        spans = r["breakdown"]["spans_ms"]
        lines += ["", f"Where a request's time went ({r['breakdown']['requests']} requests with `X-Server-Timing: 1`, "
                  "Python load generator, mean ms per request; batch spans are the whole batch's):", "",
                  "| " + " | ".join(spans) + " |", "|" + "---:|" * len(spans), "| " + " | ".join(f"{v:.2f}" for v in spans.values()) + " |"]
    lines += ["", "Bad requests (the server stayed up: " f"{'yes' if r['alive_after_bad_requests'] else 'NO'}):", "",
              "| request | status | error |", "|---|---:|---|"]
    lines += [f"| {x['request']} | {x['status']} | {x['error']} |" for x in r["bad_requests"]]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


if __name__ == "__main__":
    main()
