"""SQL structure features: what a query's shape is, as words a text encoder can read (preset ``sql``).

:func:`sql_structure_text` (preprocessor ``sql-structure-v1``) puts a summary of the parsed query (select
blocks, nesting, tables and join predicates, where subqueries sit and whether they are correlated, predicate
kinds, aggregates, clauses) before the query's own text with its literals replaced by ``?``. Queries of one
shape but different constants then read alike, and the words that decide which rewrite rules help
(a correlated scalar subquery in WHERE, a derived table, an OR of joins) come first, where truncation never cuts.
Text that does not parse as SQL is returned with whitespace collapsed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SPACE = re.compile(r"\s+")


@dataclass
class SqlFeatures:
    """Counts and kinds read from one query (see :func:`sql_features`)."""

    selects: int = 0
    depth: int = 0
    tables: int = 0
    distinct_tables: int = 0
    join_predicates: int = 0
    explicit_joins: int = 0
    ctes: int = 0
    correlated: int = 0
    subqueries: Counter = field(default_factory=Counter)   # "scalar in where", "exists in where", "derived table", ...
    predicates: Counter = field(default_factory=Counter)   # "equality", "range", "like", "in-list", ...
    aggregates: Counter = field(default_factory=Counter)   # "sum", "count", ...
    clauses: Counter = field(default_factory=Counter)      # "group by", "order by", "limit", "window", ...

    def words(self) -> str:
        """The features as one line of words (stable order)."""
        head = [f"{self.selects} select blocks", f"nesting depth {self.depth}", f"{self.tables} table references",
                f"{self.distinct_tables} tables", f"{self.join_predicates} join predicates"]
        if self.explicit_joins:
            head.append(f"{self.explicit_joins} explicit joins")
        if self.ctes:
            head.append(f"{self.ctes} common table expressions")
        if self.correlated:
            head.append(f"{self.correlated} correlated subqueries")
        parts = ["structure: " + ", ".join(head)]
        for name, counter in (("subqueries", self.subqueries), ("predicates", self.predicates),
                              ("aggregates", self.aggregates), ("clauses", self.clauses)):
            if counter:
                parts.append(f"{name}: " + ", ".join(k if v == 1 else f"{k} x{v}" for k, v in sorted(counter.items())))
        return "; ".join(parts)


def _context(node: Any) -> str:
    """Where a subquery sits: ``where``, ``having``, ``select``, ``from``, ``join`` or ``other``."""
    from sqlglot import exp

    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.Where):
            return "where"
        if isinstance(parent, exp.Having):
            return "having"
        if isinstance(parent, (exp.From, exp.Join)):
            return "from" if isinstance(parent, exp.From) else "join"
        if isinstance(parent, exp.Select):
            return "select" if child in parent.expressions else "other"
        child, parent = parent, parent.parent
    return "other"


def _subquery_kind(select: Any) -> str:
    from sqlglot import exp

    parent = select.parent
    if isinstance(parent, exp.Subquery):
        parent = parent.parent
    where = _context(select)
    if isinstance(parent, exp.Exists):
        return f"{'not exists' if isinstance(parent.parent, exp.Not) else 'exists'} in {where}"
    if isinstance(parent, exp.In):
        return f"{'not in' if isinstance(parent.parent, exp.Not) else 'in'} subquery in {where}"
    if isinstance(parent, (exp.Any, exp.All)):
        return f"quantified subquery in {where}"
    if where in ("from", "join"):
        return "derived table"
    if isinstance(parent, (exp.Union, exp.Intersect, exp.Except)):
        return "set operation branch"
    if isinstance(parent, exp.CTE):
        return "common table expression"
    return f"scalar in {where}"


def sql_features(sql: str) -> SqlFeatures | None:
    """The structure of ``sql`` (None when it does not parse)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # noqa: BLE001 - any parse failure means "not SQL we can read"
        return None
    if tree is None:
        return None
    feats = SqlFeatures()
    selects = list(tree.find_all(exp.Select))
    feats.selects = len(selects)
    for select in selects:
        depth, node = 0, select.parent
        while node is not None:
            depth += isinstance(node, exp.Select)
            node = node.parent
        feats.depth = max(feats.depth, depth)
        if select is not tree and not (isinstance(tree, (exp.Union, exp.Intersect, exp.Except)) and select.parent is tree):
            feats.subqueries[_subquery_kind(select)] += 1
    tables = [t.name.lower() for t in tree.find_all(exp.Table)]
    feats.tables, feats.distinct_tables = len(tables), len(set(tables))
    feats.explicit_joins = sum(1 for _ in tree.find_all(exp.Join))
    feats.ctes = sum(1 for _ in tree.find_all(exp.CTE))
    for eq in tree.find_all(exp.EQ):
        left, right = eq.left, eq.right
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            feats.join_predicates += 1
        else:
            feats.predicates["equality"] += 1
    kinds = {exp.NEQ: "inequality", exp.GT: "range", exp.GTE: "range", exp.LT: "range", exp.LTE: "range",
             exp.Like: "like", exp.ILike: "like", exp.Between: "between", exp.Is: "is null", exp.Or: "or"}
    for kind, word in kinds.items():
        for _ in tree.find_all(kind):
            feats.predicates[word] += 1
    for node in tree.find_all(exp.In):
        if not node.args.get("query"):
            feats.predicates["in-list"] += 1
    for node in tree.find_all(exp.AggFunc):
        feats.aggregates[node.key.lower()] += 1
    clause_types = {exp.Group: "group by", exp.Having: "having", exp.Order: "order by", exp.Limit: "limit",
                    exp.Window: "window function", exp.Case: "case", exp.Distinct: "distinct", exp.Union: "union",
                    exp.Intersect: "intersect", exp.Except: "except", exp.Cast: "cast", exp.Interval: "interval",
                    exp.Extract: "extract", exp.Substring: "substring"}
    for kind, word in clause_types.items():
        for _ in tree.find_all(kind):
            feats.clauses[word] += 1
    feats.correlated = _correlated(tree)
    return feats


def _correlated(tree: Any) -> int:
    """Subquery scopes that reference a column of an enclosing scope (as far as qualified names show it)."""
    try:
        from sqlglot.optimizer.scope import traverse_scope

        return sum(1 for scope in traverse_scope(tree) if scope.is_correlated_subquery)
    except Exception:  # noqa: BLE001 - scope analysis fails on some exotic queries; then report none
        return 0


def qualified_sql(sql: str, schema: Mapping[str, Mapping[str, str]] | None) -> str:
    """``sql`` with every column bound to its table by ``schema`` (``{table: {column: type}}``), PostgreSQL text.

    Structure needs it: without a schema an unqualified column in a subquery cannot be told local from outer, so
    every subquery with unqualified columns reads as correlated (TPC-DS Q9's fifteen independent scalar subqueries
    did). Returns ``sql`` unchanged when there is no schema or the query does not parse or qualify.
    """
    if not schema:
        return sql
    import sqlglot
    from sqlglot.optimizer.qualify import qualify

    try:
        tree = qualify(sqlglot.parse_one(sql, read="postgres"), schema=dict(schema), dialect="postgres",
                       expand_stars=False, quote_identifiers=False, validate_qualify_columns=False)
        return tree.sql(dialect="postgres")
    except Exception:  # noqa: BLE001 - sqlglot raises many error types for queries it cannot qualify
        return sql


def normalized_sql(sql: str) -> str:
    """``sql`` lower-cased with literals replaced by ``?`` and whitespace collapsed (the text as it parses)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # noqa: BLE001
        return _SPACE.sub(" ", sql).strip().lower()

    def blank(node):
        if isinstance(node, exp.Literal):
            return exp.Placeholder()
        return node

    return _SPACE.sub(" ", tree.transform(blank).sql(dialect="postgres")).strip().lower()


def sql_structure_text(sql: str) -> str:
    """Preprocessor ``sql-structure-v1``: structure words, then the normalized query (``structure: ...; sql: ...``)."""
    feats = sql_features(sql)
    if feats is None:
        return _SPACE.sub(" ", sql).strip()
    return f"{feats.words()}; sql: {normalized_sql(sql)}"
