"""Apply rules to one query on a live database: rewrite, verify the result, time both (``retriever sql rewrite``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from indexing.errors import RetrieverError
from retriever.sql.equivalence import has_order_by, same_result
from retriever.sql.rules import apply_rules


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


def rewrite_on_database(conn, sql: str, rules: Sequence[str], schema: Mapping[str, Mapping[str, str]], *,
                        repeats: int = 3, timeout_ms: int = 60_000) -> RewriteOutcome:
    """Rewrite ``sql`` with ``rules``, check the rewrite returns the original's result, and time both.

    The rewrite is returned only when verified; otherwise the original is, with ``status="refused"``.

    Raises:
        RetrieverError: the original query itself fails or times out on the database.
    """
    from retriever.sql.pool import median, time_query

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
    if " ".join(text.split()) == " ".join(sql.split()):
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
    """The workload (database) whose schema holds every table ``sql`` reads.

    Raises:
        RetrieverError: the query does not parse or no single workload holds its tables.
    """
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception as exc:  # noqa: BLE001
        raise RetrieverError(f"the query does not parse: {str(exc).splitlines()[0][:200]}") from None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables = {t.name.lower() for t in tree.find_all(exp.Table)} - ctes
    matches = [name for name, schema in schemas.items() if tables <= {t.lower() for t in schema}]
    if len(matches) != 1:
        raise RetrieverError(f"cannot tell which workload's database holds tables {', '.join(sorted(tables)) or '(none)'}; "
                             f"pass --workload ({', '.join(schemas) or 'the pool has no schema'})")
    return matches[0]
