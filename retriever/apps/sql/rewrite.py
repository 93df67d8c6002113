"""Rewriting one query by its retrieved demonstrations: the vote, an optional check on the database, the choice.

The one decision procedure of ``retriever sql rewrite`` and ``benchmarks.sql``: the demonstrations vote for a rule
set (:func:`retriever.apps.sql.demos.vote`); with the ``planner`` check PostgreSQL's planner picks among the voted
rule sets (:func:`retriever.apps.sql.demos.planner_checked`), with the ``timed`` check a timed trial of them does
(:func:`retriever.apps.sql.demos.timed_checked`). :func:`choose_rules` makes that choice from the vote totals,
:func:`decide` from the demonstrations, and :func:`rewrite` then applies the chosen rules on the database, verified
and timed (:func:`retriever.apps.sql.apply.rewrite_on_database`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from indexing.errors import RetrieverError
from retriever.apps.sql.apply import RewriteOutcome

Check = Literal["none", "planner", "timed"]
CHECKS: tuple[str, ...] = ("none", "planner", "timed")

Cost = Callable[[str], "float | None"]
"""``cost(sql) -> the planner's estimated total cost`` (None: it does not plan)."""
Measure = Callable[[Mapping[str, str]], Mapping[str, Any]]
"""``measure({rule key: rewrite}) -> {rule key: Remeasured}`` (the original and the rewrites run, interleaved)."""


@dataclass(frozen=True)
class Choice:
    """The rules chosen for a query (``[]`` = keep it) and how many rewrites the check planned or measured."""

    rules: list[str]
    tried: int = 0


@dataclass(frozen=True)
class Decision:
    """The demonstrations' vote (``voted``, every candidate's ``totals``) and the rules chosen after the check."""

    voted: list[str]
    totals: dict[str, float]
    rules: list[str]
    tried: int = 0


@dataclass(frozen=True)
class RewriteResult:
    """What :func:`rewrite` did: its :class:`Decision` and the outcome of applying the chosen rules."""

    decision: Decision
    outcome: RewriteOutcome

    @property
    def voted(self) -> list[str]:
        """The rule set the demonstrations voted for (``[]``: none)."""
        return self.decision.voted

    @property
    def chosen(self) -> list[str]:
        """The rules chosen after the check (what was applied, unless refused)."""
        return self.decision.rules


def choose_rules(query: str, totals: Mapping[str, float], schema: Mapping[str, Mapping[str, str]], *,
                 check: Check = "none", cost: Cost | None = None, measure: Measure | None = None) -> Choice:
    """The rules to apply to ``query`` given the vote ``totals`` (:func:`retriever.apps.sql.demos.vote`).

    ``none``: the best-voted rule set (:func:`retriever.apps.sql.demos.voted_rules`). ``planner``: the planner's
    pick among the rule sets with a positive total, by ``cost``; ``tried`` counts the rewrites it planned.
    ``timed``: a timed trial of those rewrites by ``measure`` (:func:`retriever.apps.sql.demos.voted_rewrites`);
    ``tried`` counts the rewrites proposed for it.

    Raises:
        RetrieverError: an unknown ``check``, or the check without its ``cost``/``measure``.
    """
    from retriever.apps.sql.demos import planner_checked, timed_checked, voted_rewrites, voted_rules

    if check not in CHECKS:
        raise RetrieverError(f"unknown check {check!r}; one of {', '.join(CHECKS)}")
    if check == "none":
        return Choice(voted_rules(totals))
    if check == "planner":
        if cost is None:
            raise RetrieverError("the planner check needs the planner's cost")
        rules, ratios = planner_checked(query, totals, schema, cost)
        return Choice(rules, len(ratios))
    if measure is None:
        raise RetrieverError("the timed check needs a measurement")
    rewrites = voted_rewrites(query, totals, schema)
    rules, _ = timed_checked(rewrites, measure)
    return Choice(rules, len(rewrites))


def decide(query: str, demonstrations: Sequence[Any], records_by_id: Mapping[str, Mapping[str, Any]],
           schema: Mapping[str, Mapping[str, str]], *, check: Check = "none", cost: Cost | None = None,
           measure: Measure | None = None) -> Decision:
    """The demonstrations' vote for ``query`` and the rules chosen from it (:func:`choose_rules`).

    Raises:
        RetrieverError: as :func:`choose_rules`.
    """
    from retriever.apps.sql.demos import vote

    voted, totals = vote(demonstrations, records_by_id)
    choice = choose_rules(query, totals, schema, check=check, cost=cost, measure=measure)
    return Decision(voted, totals, choice.rules, choice.tried)


def rewrite(conn, query: str, demonstrations: Sequence[Any], records_by_id: Mapping[str, Mapping[str, Any]],
            schema: Mapping[str, Mapping[str, str]], *, check: Check = "none", repeats: int = 3) -> RewriteResult:
    """Decide the rules for ``query`` from its demonstrations (the check planned or timed on ``conn``: ``repeats``
    interleaved runs in a trial), then apply them on ``conn``: verified equal and timed (``repeats`` runs each).

    Raises:
        RetrieverError: as :func:`choose_rules`; the original query fails or times out on the database.
    """
    from retriever.apps.sql.apply import remeasure, rewrite_on_database
    from retriever.apps.sql.postgres import planned_cost

    decision = decide(query, demonstrations, records_by_id, schema, check=check,
                      cost=lambda sql: planned_cost(conn, sql),
                      measure=lambda texts: remeasure(conn, query, texts, repeats=repeats))
    return RewriteResult(decision, rewrite_on_database(conn, query, decision.rules, schema, repeats=repeats))


def check_server(conninfo: str | None = None, data_dir: Path | None = None) -> None:
    """Check that exactly one database is named: a server's ``conninfo`` or a ``data_dir`` holding a cluster kept by
    ``retriever sql build-pool --data-dir``.

    Raises:
        RetrieverError: neither or both given, or ``data_dir`` is not a kept cluster.
    """
    if (conninfo is None) == (data_dir is None):
        raise RetrieverError("give the database: --db URL or --data-dir DIR (a cluster kept by build-pool --data-dir)")
    if data_dir is not None and not (Path(data_dir) / "data" / "PG_VERSION").is_file():
        raise RetrieverError(f"{data_dir}: not a cluster kept by `retriever sql build-pool --data-dir`")


@contextmanager
def server(conninfo: str | None = None, data_dir: Path | None = None) -> Iterator[str]:
    """The connection string of the PostgreSQL server to use: ``conninfo`` as given, or the kept cluster in
    ``data_dir`` started for the block (and stopped after it).

    Raises:
        RetrieverError: as :func:`check_server`, or the cluster does not start.
    """
    from retriever.apps.sql.postgres import PrivateCluster

    check_server(conninfo, data_dir)
    if conninfo is not None:
        yield conninfo
        return
    cluster = PrivateCluster(root=Path(data_dir), keep=True).start()
    try:
        yield cluster.conninfo()
    finally:
        cluster.stop()
