"""A PostgreSQL to time queries on: a private cluster started (and stopped) by us, or a server given by URL.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` system user (via
``runuser``); otherwise as the current user. The cluster listens on a unix socket in its own folder only
(no TCP), with settings that make timings steadier on a shared machine (no parallel workers, no JIT).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexing.errors import RetrieverError

log = logging.getLogger(__name__)

PG_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin",
               "/usr/lib/postgresql/14/bin", "/usr/local/pgsql/bin")
SERVER_SETTINGS = {
    "max_parallel_workers_per_gather": "0",  # steadier timings, and fair to other work on a shared machine
    "jit": "off",
    "shared_buffers": "256MB",
    "work_mem": "64MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "listen_addresses": "''",
}


class DatabaseError(RetrieverError):
    """The database could not be started, reached or used."""


def postgres_bin() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl`` (``$PG_BIN`` first, then Debian's and source builds' places); None if absent."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += list(PG_BIN_DIRS)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateCluster:
    """A PostgreSQL cluster in ``root`` (a new temporary folder when None), started by :meth:`start`.

    With ``keep=True`` (or a ``root`` given) the data folder stays after :meth:`stop` and a later start reuses it.
    Use as a context manager. Raises :class:`DatabaseError` when the binaries are missing or the server fails.
    """

    root: Path | None = None
    keep: bool = False
    nice: int = 0

    def __post_init__(self) -> None:
        self._bin = postgres_bin()
        self._started = False
        self._temporary = self.root is None
        self.port = _free_port()

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "socket"

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string for database ``dbname``."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    def _as_owner(self, args: Sequence[str]) -> list[str]:
        prefix = ["nice", "-n", str(self.nice)] if self.nice else []
        if os.geteuid() == 0:
            return prefix + ["runuser", "-u", "postgres", "--"] + list(args)
        return prefix + list(args)

    def start(self) -> "PrivateCluster":
        if self._bin is None:
            raise DatabaseError("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or pass --db URL")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="retriever-pg-"))
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(self.root)]).returncode != 0:
                raise DatabaseError(f"the postgres user cannot write to {self.root} (a parent folder is closed to it); "
                                    "choose a folder it can reach, e.g. under /tmp")
        if not (self.data / "PG_VERSION").is_file():
            self._run([str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                       "-E", "UTF8", "--locale", "C"])
        options = " ".join(f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
        options += f" -k {self.socket_dir} -p {self.port}"
        self._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l", str(self.root / "server.log"),
                   "-o", options, "start"])
        self._started = True
        log.info("PostgreSQL started in %s (socket %s, port %d)", self.data, self.socket_dir, self.port)
        return self

    def stop(self) -> None:
        if self._started:
            try:
                self._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"])
            finally:
                self._started = False
        if self._temporary and not self.keep and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, args: Sequence[str]) -> None:
        done = subprocess.run(self._as_owner(args), capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            log_file = (self.root / "server.log") if self.root else None
            tail = log_file.read_text(errors="replace")[-800:] if log_file and log_file.is_file() else ""
            raise DatabaseError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-800:]} {tail}".strip())

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def connect(conninfo: str, *, autocommit: bool = True):
    """A psycopg connection; :class:`DatabaseError` (one line) when it fails."""
    import psycopg

    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database: {str(exc).strip().splitlines()[0]}") from None


def ensure_database(conninfo: str, name: str) -> None:
    """Create database ``name`` if it does not exist (``conninfo`` points at any database of the server)."""
    with connect(conninfo) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def with_dbname(conninfo: str, dbname: str) -> str:
    """``conninfo`` (URL or key=value) pointing at database ``dbname`` instead."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo(**params)


def table_schema(conn) -> dict[str, dict[str, str]]:
    """``{table: {column: type}}`` of the public schema, for sqlglot's qualification."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position").fetchall()
    schema: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        schema.setdefault(table, {})[column] = kind
    return schema


@dataclass(frozen=True)
class Run:
    """One execution: status, wall time in ms, the server process's CPU time in ms (None when it cannot be
    read: a remote server), and the rows (None when not fetched or failed)."""

    status: str  # "ok" | "timeout" | "error"
    ms: float
    cpu_ms: float | None = None
    rows: list[tuple] | None = None
    error: str | None = None

    @property
    def cost_ms(self) -> float:
        """What timings compare: the server's CPU time when known (steady on a busy machine), else wall time."""
        return self.cpu_ms if self.cpu_ms is not None else self.ms


def backend_cpu_ns(conn) -> int | None:
    """CPU time (ns) the connection's server process has used so far, from ``/proc/PID/schedstat``; None when
    the server is not on this machine or the file is unreadable."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def planned_cost(conn, sql: str) -> float | None:
    """The planner's estimated total cost of ``sql`` (``EXPLAIN``: planned, not executed), in PostgreSQL's cost
    units (comparable between plans on one database only); None when the query cannot be planned."""
    import psycopg

    try:
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql).fetchone()
    except psycopg.Error as exc:
        log.debug("EXPLAIN failed: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Total Cost"])


def execute(conn, sql: str, *, timeout_ms: int, fetch: bool = True) -> Run:
    """Run ``sql`` once under ``statement_timeout = timeout_ms`` (wall clock); times cover execution and fetching.

    Never raises for query failures: a timeout or an error becomes the :class:`Run`'s status.
    """
    import psycopg

    try:
        conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
        cpu_before = backend_cpu_ns(conn)
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description is not None else []
        ms = (time.perf_counter() - start) * 1000.0
        cpu_after = backend_cpu_ns(conn)
        cpu = (cpu_after - cpu_before) / 1e6 if cpu_before is not None and cpu_after is not None else None
        return Run("ok", ms, cpu, rows if fetch else None)
    except psycopg.errors.QueryCanceled:
        return Run("timeout", float(timeout_ms))
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Run("error", 0.0, error=message[:300])
