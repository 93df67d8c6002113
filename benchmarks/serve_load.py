"""The server and the load generators of :mod:`benchmarks.serve`.

:class:`Server` runs ``retriever serve`` in a subprocess on a free loopback port. :func:`run_load` sends
``clients`` concurrent keep-alive connections' worth of ``POST`` requests (one body after the other, each
connection waiting for its answer before sending the next) for ``seconds``, with one of two generators:

- ``wrk`` (C, one thread; Debian's ``apt-get install wrk``) with :file:`serve_wrk.lua`: the default when installed,
  a few microseconds of CPU per request, so the generator takes almost nothing from the server on 2 cores.
- ``python``: asyncio streams with the requests pre-encoded and the answers read by ``Content-Length`` (no HTTP
  client library): the fallback, about ten times wrk's CPU per request but far below httpx's.

Both report the same dict: requests answered 200, errors by kind, throughput, p50/p99/mean latency.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, REPO

CLI = [sys.executable, "-m", "cli"]
LUA = Path(__file__).with_name("serve_wrk.lua")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``retriever serve INDEX`` in a subprocess (access log off), up once ``/health`` answers."""

    def __init__(self, index: Path, *extra: str):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        CACHE.mkdir(parents=True, exist_ok=True)
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
        """``GET /info``."""
        import httpx

        return httpx.get(f"{self.url}/info", timeout=30).json()

    def alive(self) -> bool:
        """Whether the process runs and ``/health`` answers 200."""
        import httpx

        try:
            return self.process.poll() is None and httpx.get(f"{self.url}/health", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Terminate the server (kill after 30 s)."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def generator(choice: str) -> str:
    """``wrk`` or ``python``: ``auto`` picks wrk when it is on PATH."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk); use --load-generator python")
    return choice


def run_load(kind: str, port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections sending ``bodies`` in turn to ``POST path`` for ``seconds``; see the module doc."""
    if kind == "wrk":
        return _wrk(port, path, bodies, clients, seconds)
    return asyncio.run(_python(port, path, bodies, clients, seconds))


def _wrk(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as handle:
        handle.write(b"\n".join(bodies) + b"\n")
    try:
        cmd = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s", "-s", str(LUA),
               f"http://127.0.0.1:{port}", "--", path, handle.name]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        Path(handle.name).unlink()
    found = re.search(r"^WRK_JSON (\{.*\})$", run.stdout, re.M)
    if found is None:
        raise SystemExit(f"wrk printed no result: {run.stdout[-1000:]} {run.stderr[-1000:]}")
    w = json.loads(found.group(1))
    kinds = {k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]}
    seconds_run = w["duration_us"] / 1e6
    ok = w["requests"] - w["status"]  # wrk counts a status >= 400 as an answered request and an error
    return _summary(clients, ok, kinds, seconds_run, w["p50_us"] / 1e3, w["p99_us"] / 1e3, w["mean_us"] / 1e3)


async def _python(port: int, path: str, bodies: list[bytes], clients: int, seconds: float,
                  spans: list[dict[str, float]] | None = None) -> dict[str, Any]:
    """The asyncio generator; with ``spans``, every request asks for ``Server-Timing`` and its spans are appended."""
    ask = b"X-Server-Timing: 1\r\n" if spans is not None else b""
    requests = [b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                % (path.encode(), ask, len(b), b) for b in bodies]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    turn = count()
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        """One keep-alive connection: send, read the whole answer, repeat until time is up."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                writer.write(requests[next(turn) % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if not head.startswith(b"HTTP/1.1 200"):
                    why = f"HTTP {head[9:12].decode()}"
                    errors[why] = errors.get(why, 0) + 1
                    continue
                latencies.append(time.perf_counter() - start)
                if spans is not None:
                    spans.append(_spans(head, latencies[-1]))
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else [None] * 99
    mean = statistics.fmean(latencies) if latencies else None
    return _summary(clients, len(latencies), errors, elapsed, *(None if v is None else v * 1e3 for v in (cuts[49], cuts[98], mean)))


def _spans(head: bytes, latency: float) -> dict[str, float]:
    """``{span: ms}`` of a ``Server-Timing`` header, plus ``batch`` (its queries) and ``client`` (the latency)."""
    found = re.search(rb"(?i)\r\nserver-timing: *([^\r]*)", head)
    out: dict[str, float] = {}
    for part in (found.group(1).decode().split(",") if found else []):
        name, _, rest = part.strip().partition(";")
        value = re.search(r'(?:dur=|desc=")([\d.]+)', rest)
        if value:
            out[name] = float(value.group(1))
    out["client"] = latency * 1e3
    return out


async def timed_load(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """The Python generator with ``X-Server-Timing: 1`` on every request: the mean span per request (ms), and
    ``other``: the client-side latency the spans leave out (uvicorn, event-loop queueing, sockets, the client)."""
    spans: list[dict[str, float]] = []
    result = await _python(port, path, bodies, clients, seconds, spans)
    names = [n for n in ("parse", "wait", "encode", "search", "hits", "return", "json") if spans and n in spans[0]]
    mean = {n: statistics.fmean(s.get(n, 0.0) for s in spans) for n in names + ["client"]} if spans else {}
    if mean:
        mean["other"] = mean["client"] - sum(mean[n] for n in names)
    result["spans_ms"] = {n: round(v, 2) for n, v in mean.items()}
    result["mean_batch"] = round(statistics.fmean(s.get("batch", 0.0) for s in spans), 2) if spans else None
    return result


def _summary(clients: int, ok: int, errors: dict[str, int], seconds: float, p50: float | None, p99: float | None,
             mean: float | None) -> dict[str, Any]:
    return {
        "clients": clients, "requests": ok + sum(errors.values()), "errors": sum(errors.values()), "error_kinds": errors,
        "seconds": round(seconds, 2), "throughput_rps": round(ok / seconds, 1) if seconds else 0.0,
        "p50_ms": None if p50 is None else round(p50, 1), "p99_ms": None if p99 is None else round(p99, 1),
        "mean_ms": None if mean is None else round(mean, 1),
    }
