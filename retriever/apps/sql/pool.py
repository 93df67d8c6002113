"""The demonstration pool: every workload query with every candidate rewrite, verified and timed.

A pool is a folder: ``pool.jsonl`` (one record per query, see :func:`process_query`) and ``manifest.json``
(settings, schemas, counts). Records are appended to ``pool.jsonl.partial`` as queries finish (``resume``
continues from it) and the pool is written atomically (temporary file + rename) at the end, so it is never half
written. ``resume`` on a finished pool extends it: its records are tried with the candidates they lack.

A rewrite is *verified* when it ran to completion and returned the original's result (see
:mod:`retriever.apps.sql.equivalence`); only verified rewrites get a speedup and can be chosen or applied.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexing.errors import RetrieverError
from indexing.formats.jsonl import write_jsonl
from indexing.manifest import write_json_atomic
from retriever.apps.sql.equivalence import has_order_by, same_result
from retriever.apps.sql.postgres import Run, execute
from retriever.apps.sql.records import (  # noqa: F401  (re-exported: the pool's records, read back)
    HELPFUL, MANIFEST_FILE, POOL_FILE, candidate_log_speedup, gated_log_speedup, is_helped, label_of, oracle_key,
    oracle_log_speedup, read_manifest, read_pool, summarize)
from retriever.apps.sql.rules import CANDIDATES, RuleSet, apply_rules, rule_key

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

CONFIRM = 1.2
"""A rewrite whose first run is at least this much faster than its original's median is run ``repeats`` times and
its median kept; others are measured once (they are not candidates for being helpful; this saves most runs)."""


@dataclass(frozen=True)
class PoolConfig:
    """How a pool is built.

    Attributes:
        workloads: any of ``tpch``, ``tpcds``, ``tpchavoc`` (TPC-H's syntax variants, on the TPC-H database).
        scales: scale factor per database (TPC-H 1 = 1 GB; ``tpchavoc`` uses the ``tpch`` scale).
        per_template: queries per template (parameters from seeds 0..N-1).
        repeats: timed runs of every original (after a warm-up run that fetches its result) and of every rewrite
            that looks faster (see :data:`CONFIRM`); the median is kept.
        timeout_ms: statement timeout (wall clock) of the original query; a rewrite gets
            ``min(timeout, max(1 s, 3 x the original's wall time))`` (a slower rewrite is of no use).
        slow_ms: queries whose first run costs more than this are run twice only.
        candidates: the rule sets tried on every query.
    """

    workloads: tuple[str, ...] = ("tpch", "tpcds")
    scales: Mapping[str, float] = field(default_factory=lambda: {"tpch": 0.02, "tpcds": 0.02})
    per_template: int = 3
    repeats: int = 3
    timeout_ms: int = 20_000
    slow_ms: float = 1_000.0
    candidates: tuple[RuleSet, ...] = CANDIDATES

    def validate(self) -> "PoolConfig":
        from retriever.apps.sql.workloads import WORKLOADS

        for name in self.workloads:
            if name not in WORKLOADS:
                raise RetrieverError(f"unknown workload {name!r}; available: {', '.join(WORKLOADS)}")
        if not self.workloads:
            raise RetrieverError("no workload given")
        if self.per_template < 1 or self.repeats < 1 or self.timeout_ms < 100:
            raise RetrieverError("--per-template and --repeats must be >= 1, --timeout-ms >= 100")
        return self


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (ms)."""
    return float(statistics.median(values))


def time_query(conn, sql: str, *, timeout_ms: int, repeats: int, slow_ms: float, warm_up: bool = False,
               confirm_below: float = 0.0) -> tuple[Run, list[float]]:
    """Runs of ``sql``; returns the run that fetched the rows and every counted run's cost (ms).

    Cost is the server's CPU time when it can be read (see :meth:`Run.cost_ms`), else wall time. With ``warm_up``
    the fetching run is not counted (it pays for loading pages into the buffer cache) and ``repeats`` more follow.
    Otherwise the fetching run counts, and further runs (up to ``repeats`` in all) are made only when its cost is
    below ``confirm_below`` (a rewrite that looks faster is confirmed; one that is not stays a single measurement).
    A query costing more than ``slow_ms`` is run at most twice. The costs are empty when a run did not succeed.
    """
    first = execute(conn, sql, timeout_ms=timeout_ms)
    if first.status != "ok":
        return first, []
    times = [] if warm_up else [first.cost_ms]
    if warm_up:
        count = min(repeats, 2) if first.cost_ms > slow_ms else repeats
    elif first.cost_ms < confirm_below:
        count = (min(repeats, 2) if first.cost_ms > slow_ms else repeats) - 1
    else:
        count = 0
    for _ in range(count):
        run = execute(conn, sql, timeout_ms=timeout_ms, fetch=False)
        if run.status != "ok":
            return Run(run.status, run.ms, error=run.error), []
        times.append(run.cost_ms)
    return first, times


def process_query(conn, query, schema: Mapping[str, Mapping[str, str]], config: PoolConfig) -> dict[str, Any]:
    """Run ``query``'s original and every candidate rewrite; the pool record (a JSON-ready dict).

    Record fields: ``id, workload, template, sql, ordered, original`` (status, median ms, timings, rows),
    ``rewrites`` (distinct rewritten texts: ``sql, rule_sets, status`` ok|wrong|timeout|error, ``verified``,
    ``ms``, ``timings``, ``speedup``), ``candidates`` (rule key -> index in ``rewrites``, or None when the rules
    failed on the query), ``failures`` (rule key -> message) and the best verified rewrite: ``rules``,
    ``rewrite_sql``, ``original_ms``, ``rewrite_ms``, ``speedup`` (None when no rewrite is verified) and
    ``verified``.
    """
    ordered = has_order_by(query.sql)
    record: dict[str, Any] = {"id": query.id, "workload": query.workload, "template": query.template, "sql": query.sql,
                              "ordered": ordered}
    first, times = time_query(conn, query.sql, timeout_ms=config.timeout_ms, repeats=config.repeats, slow_ms=config.slow_ms,
                              warm_up=True)
    if not times:
        record.update(original={"status": first.status, "error": first.error}, rewrites=[], candidates={}, failures={},
                      rules=[], rewrite_sql=None, original_ms=None, rewrite_ms=None, speedup=None, verified=False)
        return record
    original_ms = median(times)
    record["original"] = {"status": "ok", "ms": round(original_ms, 3), "timings": [round(t, 3) for t in times],
                          "wall_ms": round(first.ms, 3), "clock": "server-cpu" if first.cpu_ms is not None else "wall",
                          "rows": len(first.rows or [])}
    record.update(rewrites=[], candidates={}, failures={}, original_ms=round(original_ms, 3))
    _try_candidates(conn, record, config.candidates, schema, config, first.rows or [], first.ms)
    return record


def extend_record(conn, record: dict[str, Any], schema: Mapping[str, Mapping[str, str]], config: PoolConfig) -> bool:
    """Try on ``record``'s query the candidates of ``config`` that it lacks (a pool built before rules were added).

    The original runs once more, for its rows (a rewrite is verified against them) and its wall time (a rewrite's
    time limit); new rewrites are timed against the record's stored original median, as the old ones were.
    Returns whether the record changed (False when nothing is missing or the original did not run).
    """
    missing = missing_candidates(record, config)
    if not missing:
        return False
    first = execute(conn, record["sql"], timeout_ms=config.timeout_ms)
    if first.status != "ok":
        log.warning("%s: the original failed when extending the pool (%s); new candidates not tried", record["id"],
                    first.error or first.status)
        return False
    _try_candidates(conn, record, missing, schema, config, first.rows or [], first.ms)
    return True


def missing_candidates(record: Mapping[str, Any], config: PoolConfig) -> list[RuleSet]:
    """The candidates of ``config`` that ``record`` has not been tried with (none when its original did not run)."""
    if record.get("original", {}).get("status") != "ok":
        return []
    return [rules for rules in config.candidates if rule_key(rules) not in record.get("candidates", {})]


def _try_candidates(conn, record: dict[str, Any], candidates: Sequence[RuleSet], schema: Mapping[str, Mapping[str, str]],
                    config: PoolConfig, original_rows: list, original_wall_ms: float) -> None:
    """Apply and run every rule set of ``candidates`` on the record's query (rewrites deduplicated by text, also
    against the record's earlier rewrites), then set the record's best verified rewrite."""
    rewrites, mapping, failures = record["rewrites"], record["candidates"], record["failures"]
    by_text = {rewrite["sql"]: i for i, rewrite in enumerate(rewrites)}
    for rules in candidates:
        key = rule_key(rules)
        try:
            text = apply_rules(record["sql"], rules, schema)
        except RetrieverError as exc:
            mapping[key], failures[key] = None, str(exc)
            continue
        if text not in by_text:
            by_text[text] = len(rewrites)
            rewrites.append(_run_rewrite(conn, text, original_rows, record["ordered"], record["original_ms"],
                                         original_wall_ms, config))
        rewrites[by_text[text]]["rule_sets"].append(key)
        mapping[key] = by_text[text]
    verified = [r for r in rewrites if r["verified"]]
    best = max(verified, key=lambda r: r["speedup"], default=None)
    if best is None:
        record.update(rules=[], rewrite_sql=None, rewrite_ms=None, speedup=None, verified=False)
    else:
        shortest = min(best["rule_sets"], key=lambda k: (len(k.split("+")), k))
        record.update(rules=shortest.split("+"), rewrite_sql=best["sql"], rewrite_ms=best["ms"], speedup=best["speedup"],
                      verified=True)


def rewrite_limit_ms(original_wall_ms: float, timeout_ms: int) -> int:
    """How long a rewrite may run: ``min(timeout, max(1 s, 3 x the original's wall time))`` (a slower one is of no use)."""
    return int(min(timeout_ms, max(1000.0, 3.0 * original_wall_ms)))


def _run_rewrite(conn, text: str, original_rows: list, ordered: bool, original_ms: float, original_wall_ms: float,
                 config: PoolConfig) -> dict[str, Any]:
    timeout = rewrite_limit_ms(original_wall_ms, config.timeout_ms)
    entry: dict[str, Any] = {"sql": text, "rule_sets": [], "status": "ok", "verified": False, "ms": None, "timings": [],
                             "speedup": None}
    first, times = time_query(conn, text, timeout_ms=timeout, repeats=config.repeats, slow_ms=config.slow_ms,
                              confirm_below=original_ms / CONFIRM)
    if first.status != "ok" or not times:
        status = first.status if first.status != "ok" else "timeout"
        entry.update(status=status, error=first.error)
        if status == "timeout":  # slower than the limit (wall clock): an upper bound on its speedup
            entry.update(ms=float(timeout), speedup=round(original_wall_ms / timeout, 4))
        return entry
    if not same_result(original_rows, first.rows or [], ordered=ordered):
        entry.update(status="wrong")  # a changed result: never verified, never timed, never applied
        return entry
    ms = median(times)
    entry.update(verified=True, ms=round(ms, 3), timings=[round(t, 3) for t in times],
                 speedup=round(original_ms / max(ms, 1e-3), 4))
    return entry


@dataclass
class PoolResult:
    """What :func:`build_pool` produced: the folder, the counts and the settings."""

    out: Path
    summary: dict[str, Any]
    config: dict[str, Any]


def build_pool(config: PoolConfig, out: Path, *, conninfo: str | None = None, data_dir: Path | None = None,
               resume: bool = False, overwrite: bool = False, nice: int = 0, time_budget_s: float | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> PoolResult:
    """Build a pool into folder ``out``.

    Args:
        conninfo: a PostgreSQL server (URL or key=value) to use; None = start a private cluster (stopped at the end).
        data_dir: keep the private cluster's data here (reused by a later build or ``retriever sql rewrite``).
        resume: continue from ``out/pool.jsonl.partial``, or extend the finished pool in ``out``: queries not in it
            are run, and its records are tried with the candidates they lack (:func:`extend_record`), so rules
            added since the pool was built need no rebuild. overwrite: replace an existing pool.
        nice: niceness of the private server and the data generators.
        time_budget_s: stop starting new queries (and loading new workloads) after this many seconds and write the
            pool from the queries done so far (the manifest says so); None = run every query.
        progress: called with (query id, done, total) after every query.

    Raises:
        RetrieverError: bad settings, an existing pool (without overwrite), database or generator failures.
    """
    from retriever.apps.sql.postgres import PrivateCluster

    config.validate()
    out = Path(out)
    partial, done = _start(out, resume=resume, overwrite=overwrite)
    cluster = None
    if conninfo is None:
        cluster = PrivateCluster(root=data_dir, keep=data_dir is not None, nice=nice).start()
        conninfo = cluster.conninfo()
    run = _Run(config, done, deadline=time.monotonic() + time_budget_s if time_budget_s is not None else float("inf"),
               nice=nice, progress=progress)
    try:
        with open(partial, "a", encoding="utf-8") as sink:
            for workload in config.workloads:
                run.workload(conninfo, workload, sink)
    finally:
        if cluster is not None:
            cluster.stop()
    records = list(done.values())
    summary = summarize(records)
    settings = asdict(config) | {"scales": dict(config.scales)}
    manifest = {"format_version": FORMAT_VERSION, "kind": "sql-demonstration-pool", "config": settings,
                "schemas": run.schemas, "rows_loaded": run.loaded, "summary": summary,
                "database": "private cluster" if cluster is not None else "given server",
                "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "helpful_speedup": HELPFUL,
                "complete": not run.stopped, "stopped_by_time_budget": run.stopped, "time_budget_s": time_budget_s}
    write_jsonl(out / POOL_FILE, records)
    partial.unlink(missing_ok=True)
    write_json_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return PoolResult(out, summary, settings)


def _start(out: Path, *, resume: bool, overwrite: bool) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Prepare folder ``out`` for a build: the partial file's path and the records already done (by id; with
    ``resume``, the finished pool's and then the partial's, so a record extended after the pool was written wins).

    Raises:
        RetrieverError: ``out`` holds a pool and neither ``overwrite`` nor ``resume`` is given.
    """
    if (out / POOL_FILE).exists() and not (overwrite or resume):
        raise RetrieverError(f"{out} already holds a pool; pass --overwrite to replace it or --resume to extend it")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / (POOL_FILE + ".partial")
    done: dict[str, dict[str, Any]] = {}
    if resume:
        for source in (out / POOL_FILE, partial):
            if source.is_file():
                done.update((r["id"], r) for r in read_pool(source))
    elif partial.exists():
        partial.unlink()
    return partial, done


class _Run:
    """One build's progress over the workloads: the records ``done`` (by id, updated in place), the schemas and
    rows loaded per workload, and whether the time budget stopped it."""

    def __init__(self, config: PoolConfig, done: dict[str, dict[str, Any]], *, deadline: float, nice: int,
                 progress: Callable[[str, int, int], None] | None):
        self.config, self.done, self.deadline, self.nice, self.progress = config, done, deadline, nice, progress
        self.schemas: dict[str, Any] = {}
        self.loaded: dict[str, Any] = {}
        self.stopped = False

    def workload(self, conninfo: str, workload: str, sink) -> None:
        """Load ``workload``'s database when it lacks its tables (not once the budget is spent), then run its queries.

        Raises:
            RetrieverError: database or generator failures.
        """
        from retriever.apps.sql.postgres import connect, ensure_database, table_schema, with_dbname
        from retriever.apps.sql.workloads import database_of, generate_and_load, has_tables, workload_queries

        database = database_of(workload)
        ensure_database(conninfo, database)
        with connect(with_dbname(conninfo, database)) as conn:
            scale = float(self.config.scales.get(database, 0.1))
            if not has_tables(conn, database):  # data functions take the database's name (its generator)
                if time.monotonic() > self.deadline:
                    self.stopped = True
                    return
                log.info("generating and loading %s at scale %g", database, scale)
                self.loaded[database] = generate_and_load(conn, database, scale, nice=self.nice)
            schema = table_schema(conn)
            self.schemas[workload] = schema
            self.queries(conn, workload_queries(workload, range(self.config.per_template), scale=scale), schema, sink)

    def queries(self, conn, queries: Sequence[Any], schema: Mapping[str, Mapping[str, str]], sink) -> None:
        """Run each query not done (or extend its record with the candidates it lacks), appending every new or
        changed record to ``sink``; stops at the first query with work left once the budget is spent."""
        for number, query in enumerate(queries, start=1):
            record = self.done.get(query.id)
            if (record is None or missing_candidates(record, self.config)) and time.monotonic() > self.deadline:
                self.stopped = True
                return
            if record is None:
                record = self.done[query.id] = process_query(conn, query, schema, self.config)
            elif not extend_record(conn, record, schema, self.config):
                record = None
            if record is not None:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
            if self.progress:
                self.progress(query.id, number, len(queries))
