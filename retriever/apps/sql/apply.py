"""Apply rules to one query on a live database: rewrite, verify the result, time both (``retriever sql rewrite``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from indexing.errors import RetrieverError
from retriever.apps.sql.equivalence import has_order_by, same_result
from retriever.apps.sql.rules import apply_rules


@dataclass(frozen=True)
class RewriteOutcome:
    """What happened to one query.

    Attributes:
        status: ``applied`` (verified, returned), ``refused`` (the rewrite changed the result or failed; the
            original is kept), ``no-rules`` (nothing to apply) or ``unchanged`` (the rules left the query as it was).
        rules: the rules applied. sql: the query to run (the rewrite when applied, else the original).
        original_ms, rewrite_ms: median cost (server CPU time when readable, else wall time), ms.
        speedup: original_ms / rewrite_ms (None when not timed). reason: why a rewrite was refused.
    """

    status: str
    rules: list[str]
    sql: str
    original_ms: float | None = None
    rewrite_ms: float | None = None
    speedup: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unchanged(sql: str, rewrite: str) -> bool:
    """True when ``rewrite`` is ``sql`` up to whitespace (nothing to run or apply)."""
    return " ".join(rewrite.split()) == " ".join(sql.split())


def rewrite_on_database(conn, sql: str, rules: Sequence[str], schema: Mapping[str, Mapping[str, str]], *,
                        repeats: int = 3, timeout_ms: int = 60_000) -> RewriteOutcome:
    """Rewrite ``sql`` with ``rules``, check the rewrite returns the original's result, and time both.

    The rewrite is returned only when verified; otherwise the original is, with ``status="refused"``.

    Raises:
        RetrieverError: the original query itself fails or times out on the database.
    """
    from retriever.apps.sql.pool import median, time_query

    rules = list(rules)
    if not rules:
        return RewriteOutcome("no-rules", [], sql)
    first, times = time_query(conn, sql, timeout_ms=timeout_ms, repeats=repeats, slow_ms=float("inf"), warm_up=True)
    if not times:
        raise RetrieverError(f"the query did not run on the database ({first.status}: {first.error or 'timeout'})")
    original_ms = median(times)
    try:
        text = apply_rules(sql, rules, schema)
    except RetrieverError as exc:
        return RewriteOutcome("refused", rules, sql, original_ms, reason=str(exc))
    if unchanged(sql, text):
        return RewriteOutcome("unchanged", rules, sql, original_ms)
    second, rewrite_times = time_query(conn, text, timeout_ms=timeout_ms, repeats=repeats, slow_ms=float("inf"),
                                       confirm_below=float("inf"))
    if not rewrite_times:
        return RewriteOutcome("refused", rules, sql, original_ms, reason=f"the rewrite did not run ({second.status}: {second.error or 'timeout'})")
    if not same_result(first.rows or [], second.rows or [], ordered=has_order_by(sql)):
        return RewriteOutcome("refused", rules, sql, original_ms, reason="the rewrite returns a different result")
    rewrite_ms = median(rewrite_times)
    return RewriteOutcome("applied", rules, text, round(original_ms, 3), round(rewrite_ms, 3),
                          round(original_ms / max(rewrite_ms, 1e-3), 4))


def workload_of(sql: str, schemas: Mapping[str, Mapping[str, Any]]) -> str:
    """The database whose schema holds every table ``sql`` reads (workloads sharing a database, as TPC-H and
    TPC-Havoc do, count once).

    Raises:
        RetrieverError: the query does not parse or no single workload holds its tables.
    """
    import sqlglot
    from sqlglot import exp

    from retriever.apps.sql.workloads import database_of

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception as exc:  # noqa: BLE001
        raise RetrieverError(f"the query does not parse: {str(exc).splitlines()[0][:200]}") from None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables = {t.name.lower() for t in tree.find_all(exp.Table)} - ctes
    matches = sorted({database_of(name) for name, schema in schemas.items() if tables <= {t.lower() for t in schema}})
    if len(matches) != 1:
        raise RetrieverError(f"cannot tell which workload's database holds tables {', '.join(sorted(tables)) or '(none)'}; "
                             f"pass --workload ({', '.join(sorted({database_of(n) for n in schemas})) or 'the pool has no schema'})")
    return matches[0]


@dataclass(frozen=True)
class Remeasured:
    """An independent measurement of one rewrite against its original (see :func:`remeasure`).

    Attributes:
        status: ``ok`` (same result, timed), ``wrong`` (the result differs: never applied, effect 0), ``timeout``
            (slower than its limit) or ``error``.
        original_ms, rewrite_ms: median cost (server CPU time when readable, else wall time), ms.
        log_speedup: ``log(original_ms / rewrite_ms)`` when ok; ``log(original wall time / limit)`` (negative) on
            a timeout; 0 for a wrong result or an error (the original would be kept).
    """

    status: str
    original_ms: float
    rewrite_ms: float | None
    log_speedup: float


def remeasure(conn, sql: str, rewrites: Mapping[str, str], *, repeats: int = 3, timeout_ms: int = 20_000) -> dict[str, Remeasured]:
    """Time ``sql`` and each rewrite text (by key) again, interleaved, so that drift and load hit them alike.

    A first round fetches every result (a rewrite returning other rows than the original is ``wrong`` and not
    timed further); then ``repeats`` rounds run the original and every rewrite in turn, and medians are kept.
    A rewrite may take ``min(timeout_ms, max(1 s, 3 x the original's wall time))``.

    Raises:
        RetrieverError: the original fails or times out.
    """
    from retriever.apps.sql.postgres import execute
    from retriever.apps.sql.pool import median, rewrite_limit_ms

    first = execute(conn, sql, timeout_ms=timeout_ms)
    if first.status != "ok":
        raise RetrieverError(f"the query did not run on the database ({first.status}: {first.error or 'timeout'})")
    limit = rewrite_limit_ms(first.ms, timeout_ms)
    ordered = has_order_by(sql)
    status: dict[str, str] = {}
    for key, text in rewrites.items():
        run = execute(conn, text, timeout_ms=limit)
        if run.status != "ok":
            status[key] = run.status
        elif not same_result(first.rows or [], run.rows or [], ordered=ordered):
            status[key] = "wrong"
        else:
            status[key] = "ok"
    original_times: list[float] = []
    times: dict[str, list[float]] = {key: [] for key in rewrites}
    for _ in range(repeats):
        run = execute(conn, sql, timeout_ms=timeout_ms, fetch=False)
        if run.status == "ok":
            original_times.append(run.cost_ms)
        for key, text in rewrites.items():
            if status[key] == "ok":
                run = execute(conn, text, timeout_ms=limit, fetch=False)
                if run.status == "ok":
                    times[key].append(run.cost_ms)
                else:
                    status[key] = run.status
    original_ms = median(original_times) if original_times else first.cost_ms
    out = {}
    for key in rewrites:
        if status[key] == "ok":
            ms = median(times[key])
            out[key] = Remeasured("ok", round(original_ms, 3), round(ms, 3), math.log(original_ms / max(ms, 1e-3)))
        elif status[key] == "timeout":
            out[key] = Remeasured("timeout", round(original_ms, 3), float(limit), math.log(first.ms / limit))
        else:
            out[key] = Remeasured(status[key], round(original_ms, 3), None, 0.0)
    return out
