"""Issue 9, acceptance 4: load test of ``retriever serve`` on loopback.

Starts ``retriever serve INDEX`` as a subprocess on a free loopback port, then an asyncio load generator
(httpx, one connection per client) sends single-query ``POST /search`` requests (dense, k=10, the
collection's queries in turn) at 1, 8 and 32 concurrent clients, each level bounded in requests and
time, and reports throughput, p50/p99 latency and errors. The same 32-client level against a server
started with ``--max-batch 1`` is the baseline for micro-batching. Then 32 clients for 60 s (the
acceptance run: zero errors, p99 reported), and the bad requests of the acceptance (malformed JSON,
k=0, k=10^6, a 1 MB query, an unknown mode) with their status codes and messages, followed by a health
check (the server must still be up).

Index: ``--index`` or the SciFact index of benchmarks.quality (built here with the default model and
``--chunk-tokens 0`` when missing); without ../shared/data/scifact, the xquad-en demo data in data/.

    python -m benchmarks.serve [--index DIR] [--requests 600] [--level-seconds 30] [--soak-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, DATA, REPO, write_results

CLI = [sys.executable, "-m", "cli"]


def pick_data() -> tuple[str, Path]:
    """The collection to serve: SciFact from the shared data when present, else the bundled demo data."""
    if (DATA / "scifact" / "corpus.jsonl").is_file():
        return "scifact", DATA / "scifact"
    return "xquad-en", REPO / "data" / "xquad-en"


def ensure_index(name: str, data: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for candidate in (CACHE / "quality" / f"{name}-minilm-chunk0", CACHE / "serve" / f"{name}-minilm-chunk0"):
        if (candidate / "manifest.json").is_file():
            return candidate
    out = CACHE / "serve" / f"{name}-minilm-chunk0"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(CLI + ["index", "build", str(data), "--out", str(out), "--chunk-tokens", "0", "--overwrite"], check=True)
    return out


def read_queries(data: Path) -> list[str]:
    from indexing.formats.queries import read_queries

    return list(read_queries(data / "queries.jsonl").values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``retriever serve`` in a subprocess, up once ``/health`` answers."""

    def __init__(self, index: Path, *extra: str):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(CACHE / f"serve-{self.port}.log", "w+")
        cmd = CLI + ["serve", str(index), "--port", str(self.port), "--no-access-log", *extra]
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"retriever serve exited: {self.log.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("retriever serve did not come up in 300 s")
            time.sleep(0.25)

    def info(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/info", timeout=30).json()

    def alive(self) -> bool:
        import httpx

        try:
            return self.process.poll() is None and httpx.get(f"{self.url}/health", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def load(url: str, queries: list[str], clients: int, max_requests: int, max_seconds: float, k: int) -> dict[str, Any]:
    """``clients`` concurrent loops of single-query requests until ``max_requests`` are sent or time is up."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    stop_at = time.perf_counter() + max_seconds

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < stop_at:
            query = queries[sent % len(queries)]
            sent += 1
            start = time.perf_counter()
            try:
                response = await session.post("/search", json={"query": query, "k": k})
                ok = response.status_code == 200 and len(response.json()["hits"]) == k
                why = "" if ok else f"HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                ok, why = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors[why] = errors.get(why, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    done = len(latencies)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if done >= 2 else None
    return {
        "clients": clients,
        "requests": done + sum(errors.values()),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(done / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 1) if cuts else None,
        "p99_ms": round(cuts[98] * 1000, 1) if cuts else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
    }


def measured(server: Server, queries: list[str], clients: int, requests: int, seconds: float, k: int) -> dict[str, Any]:
    """One load level, with the server's mean batch size over it (from ``/info`` stats)."""
    before = server.info()["stats"]
    result = asyncio.run(load(server.url, queries, clients, requests, seconds, k))
    after = server.info()["stats"]
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = round((after["queries"] - before["queries"]) / batches, 2) if batches else None
    print(json.dumps(result), flush=True)
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
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="Index to serve (default: SciFact, built when missing).")
    parser.add_argument("--clients", default="1,8,32", help="Concurrency levels.")
    parser.add_argument("--requests", type=int, default=600, help="Requests per level, at most.")
    parser.add_argument("--level-seconds", type=float, default=30, help="Seconds per level, at most.")
    parser.add_argument("--soak-seconds", type=float, default=60, help="The long run's duration.")
    parser.add_argument("--soak-clients", type=int, default=32, help="The long run's concurrency.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the --max-batch 1 baseline.")
    args = parser.parse_args()
    name, data = pick_data()
    index = ensure_index(name, data, args.index)
    queries = read_queries(data)
    levels = [int(c) for c in args.clients.split(",")]
    CACHE.mkdir(parents=True, exist_ok=True)

    server = Server(index)
    try:
        info = server.info()
        asyncio.run(load(server.url, queries, 4, 40, 60, args.k))  # warm-up (first batches, allocator)
        batched = [measured(server, queries, c, args.requests, args.level_seconds, args.k) for c in levels]
        soak = measured(server, queries, args.soak_clients, 10**9, args.soak_seconds, args.k)
        bad = bad_requests(server.url)
        alive = server.alive()
        soak_after = server.info()["stats"]
    finally:
        server.stop()
    baseline = None
    if not args.no_baseline:
        server = Server(index, "--max-batch", "1")
        try:
            asyncio.run(load(server.url, queries, 4, 40, 60, args.k))
            baseline = measured(server, queries, max(levels), args.requests, args.level_seconds, args.k)
        finally:
            server.stop()

    results = {
        "index": str(index), "collection": name, "documents": info["documents"], "factory": info["factory"],
        "model": info["model"], "k": args.k, "queries": len(queries),
        "levels": batched, "baseline_unbatched": baseline, "soak": soak,
        "bad_requests": bad, "alive_after_bad_requests": alive, "server_stats": soak_after,
        "acceptance": {
            "soak_zero_errors": soak["errors"] == 0,
            "bad_requests_all_4xx_with_message": all(400 <= b["status"] < 500 and b["error"] for b in bad),
            "alive_after_bad_requests": alive,
        },
        "note": "client and server share the machine's CPUs (the load generator takes part of them)",
    }
    write_results("serve", results, markdown(results))


def markdown(r: dict[str, Any]) -> str:
    machine = f"{os.cpu_count()} CPUs"
    lines = [
        "# Query service under load (`retriever serve`, loopback)",
        "",
        f"{r['collection']} index ({r['documents']:,} documents, {r['factory']}, {r['model']}), single-query "
        f"`POST /search` requests (dense, k={r['k']}), {machine}; the load generator (Python, httpx) runs on the "
        "same machine as the server and takes part of its CPU. Each level is bounded in requests and time.",
        "",
        "| clients | server | requests | errors | throughput | p50 | p99 | mean batch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(lvl, "batched (default)") for lvl in r["levels"]]
    if r["baseline_unbatched"]:
        rows.append((r["baseline_unbatched"], "`--max-batch 1`"))
    rows.append((r["soak"], f"batched, {r['soak']['seconds']:.0f} s run (acceptance)"))
    for lvl, kind in rows:
        lines.append(
            f"| {lvl['clients']} | {kind} | {lvl['requests']:,} | {lvl['errors']} | {lvl['throughput_rps']:.1f} req/s "
            f"| {_ms(lvl['p50_ms'])} | {_ms(lvl['p99_ms'])} | {lvl['mean_batch']} |"
        )
    if r["baseline_unbatched"]:
        top = next(lvl for lvl in r["levels"] if lvl["clients"] == r["baseline_unbatched"]["clients"])
        ratio = top["throughput_rps"] / r["baseline_unbatched"]["throughput_rps"]
        lines += ["", f"Micro-batching at {top['clients']} clients: {ratio:.2f}x the throughput of `--max-batch 1`."]
    lines += ["", "Bad requests (the server stayed up: "
              f"{'yes' if r['alive_after_bad_requests'] else 'NO'}):", "", "| request | status | error |", "|---|---:|---|"]
    for b in r["bad_requests"]:
        lines.append(f"| {b['request']} | {b['status']} | {b['error']} |")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


if __name__ == "__main__":
    main()
