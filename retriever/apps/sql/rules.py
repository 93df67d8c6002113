"""Candidate rewrites: sqlglot optimizer rules, singly and in short sequences, after qualification, and rules of
our own for what PostgreSQL's planner does not do and sqlglot has no rule for (:data:`CUSTOM_RULES`).

Every rewrite first qualifies the query against the database schema (columns bound to tables, ``*``
expanded), which the rules need, then applies the named rules in order and prints PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from indexing.errors import RetrieverError
from retriever.apps.sql.own_rules import inline_ctes, simplify_case_predicates, unnest_scalar_subqueries, unnest_select_subqueries

log = logging.getLogger(__name__)

RULE_NAMES: tuple[str, ...] = (
    "unnest_subqueries", "pushdown_predicates", "pushdown_projections", "optimize_joins", "eliminate_subqueries",
    "merge_subqueries", "eliminate_joins", "eliminate_ctes", "simplify", "normalize",
)
"""The rules a rule set may name (sqlglot.optimizer rule functions of the same name)."""

RuleSet = tuple[str, ...]

CANDIDATES: tuple[RuleSet, ...] = (
    ("unnest_subqueries",),
    ("pushdown_predicates",),
    ("pushdown_projections",),
    ("optimize_joins",),
    ("eliminate_subqueries",),
    ("merge_subqueries",),
    ("eliminate_joins",),
    ("simplify",),
    ("unnest_subqueries", "merge_subqueries"),
    ("eliminate_subqueries", "merge_subqueries"),
    ("merge_subqueries", "pushdown_predicates"),
    ("inline_ctes",),
    ("unnest_select_subqueries",),
    ("simplify_case_predicates",),
    ("unnest_scalar_subqueries",),
    ("pushdown_projections", "normalize", "unnest_subqueries", "pushdown_predicates", "optimize_joins",
     "eliminate_subqueries", "merge_subqueries", "eliminate_joins", "eliminate_ctes", "simplify"),
)
"""The rule sets tried on every pool query (the last is sqlglot's whole optimizer pipeline; ``inline_ctes``,
``unnest_select_subqueries``, ``simplify_case_predicates`` and ``unnest_scalar_subqueries`` are ours, see :mod:`retriever.apps.sql.own_rules`)."""


def rule_key(rules: Sequence[str]) -> str:
    """A rule set as one string (``unnest_subqueries+merge_subqueries``; ``none`` for the empty set)."""
    return "+".join(rules) if rules else "none"


def parse_rule_key(key: str) -> RuleSet:
    """Inverse of :func:`rule_key`; raises RetrieverError on an unknown rule name."""
    if key == "none":
        return ()
    rules = tuple(key.split("+"))
    unknown = [r for r in rules if r not in RULE_NAMES and r not in CUSTOM_RULES]
    if unknown:
        raise RetrieverError(f"unknown rewrite rule {unknown[0]!r}; known: {', '.join((*RULE_NAMES, *CUSTOM_RULES))}")
    return rules


CUSTOM_RULES: dict[str, Callable[..., Any]] = {
    "inline_ctes": inline_ctes, "unnest_select_subqueries": unnest_select_subqueries,
    "simplify_case_predicates": simplify_case_predicates, "unnest_scalar_subqueries": unnest_scalar_subqueries,
}
"""Rules beyond sqlglot's, by name: ``fn(expression, schema=...) -> expression`` (sqlglot rule conventions).
Every rewrite, whatever rule made it, is verified against the original's result before it is kept or applied."""


def _functions(rules: Sequence[str]):
    from sqlglot.optimizer import optimizer

    table = {fn.__name__: fn for fn in optimizer.RULES if fn.__name__ in RULE_NAMES or fn.__name__ == "qualify"}
    table.update(CUSTOM_RULES)
    unknown = [r for r in rules if r not in table or r == "qualify"]
    if unknown:
        raise RetrieverError(f"unknown rewrite rule {unknown[0]!r}; known: {', '.join((*RULE_NAMES, *CUSTOM_RULES))}")
    return [table["qualify"]] + [table[r] for r in rules]


def apply_rules(sql: str, rules: Sequence[str], schema: Mapping[str, Mapping[str, str]] | None) -> str:
    """``sql`` rewritten by qualification plus ``rules`` (PostgreSQL text).

    Raises:
        RetrieverError: the query does not parse or a rule fails on it (the message says which).
    """
    import sqlglot
    from sqlglot.optimizer import optimize

    functions = _functions(rules)
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
        rewritten = optimize(tree, schema=dict(schema) if schema else None, dialect="postgres", rules=functions)
        return rewritten.sql(dialect="postgres", pretty=True)
    except RetrieverError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlglot raises many error types for queries it cannot handle
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetrieverError(f"rules {rule_key(rules)} cannot rewrite this query: {message[:200]}") from None
