"""Rewrite rules of our own, for what PostgreSQL's planner does not do and sqlglot's optimizer has no rule for.

Written by hand because no library we use has them (sqlglot's optimizer decorrelates subqueries in WHERE only and
knows nothing of PostgreSQL's CTE materialization; Calcite, which LLM-R2 used, is a JVM planner). They follow
sqlglot's rule conventions (``fn(expression) -> expression`` on a qualified tree) and run after ``qualify``. A rule
that does not apply returns the tree unchanged, and a rule that cannot prove a transformation safe from the tree
alone leaves that part alone; every rewrite is still verified against the original's result before it is kept
or applied.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _cte_references(tree: Any) -> dict[int, int]:
    """How often each non-recursive CTE of ``tree`` is read, by ``id()`` of its ``exp.CTE`` node.

    A CTE is read by a table reference without schema whose name is its alias, anywhere below the WITH that
    defines it (sqlglot resolves no CTE scopes for us, so an inner CTE of the same name is counted for both).
    """
    from sqlglot import exp

    counts: dict[int, int] = {}
    for with_ in tree.find_all(exp.With):
        if with_.args.get("recursive") or with_.parent is None:
            continue
        for cte in with_.expressions:
            name = cte.alias_or_name
            counts[id(cte)] = sum(1 for table in with_.parent.find_all(exp.Table) if not table.db and table.name == name)
    return counts


def inline_ctes(expression: Any) -> Any:
    """Mark every CTE that is read more than once ``NOT MATERIALIZED`` (PostgreSQL 12+).

    PostgreSQL computes a CTE read twice or more once, into a work table that no predicate reaches; inlined, each
    reference gets the outer query's filters pushed into it (TPC-DS Q4/Q11/Q74 filter one ``year_total`` CTE six
    ways by channel and year: 3-7x faster). It can also be far slower (a CTE read again by a correlated subquery
    is recomputed per row), which is why it is a rule to choose, not a default.
    """
    from sqlglot import exp

    references = _cte_references(expression)
    for cte in list(expression.find_all(exp.CTE)):
        if references.get(id(cte), 0) > 1:
            cte.set("materialized", False)
    return expression


def unnest_select_subqueries(expression: Any) -> Any:
    """Turn correlated scalar subqueries of a SELECT list into a LEFT JOIN with a grouped derived table.

    ``SELECT c.k, (SELECT sum(o.v) FROM o WHERE o.k = c.k AND o.x > 1) AS s FROM c`` becomes
    ``SELECT c.k, _u0._v AS s FROM c LEFT JOIN (SELECT o.k AS _k0, sum(o.v) AS _v FROM o WHERE o.x > 1
    GROUP BY o.k) AS _u0 ON _u0._k0 = c.k``. PostgreSQL runs the subquery once per outer row; the join reads its
    tables once (TPC-Havoc's scalar-subquery forms of TPC-H Q9/Q10/Q16: seconds per query). sqlglot's
    ``unnest_subqueries`` handles subqueries in WHERE only.

    A subquery is transformed only when the result provably stays the same: a single aggregate expression (sum,
    avg, min, max and arithmetic on them, which are NULL on no rows as the LEFT JOIN's miss is; or exactly one
    count, which becomes ``COALESCE(.., 0)``), no GROUP BY/HAVING/LIMIT/DISTINCT/window of its own, and every
    reference to the outer query an equality ``inner expression = outer expression`` in its WHERE conjunction.
    The outer query's comma joins become CROSS JOINs (PostgreSQL binds an explicit JOIN tighter than a comma),
    and a grouped outer query gets the new column in its GROUP BY (it depends on grouped columns only).
    """
    return _unnest_scalar(expression, where=False)


def unnest_scalar_subqueries(expression: Any) -> Any:
    """:func:`unnest_select_subqueries` for correlated scalar subqueries in WHERE as well as in the SELECT list.

    ``... FROM part, lineitem WHERE l_quantity < (SELECT 0.2 * avg(l2.l_quantity) FROM lineitem AS l2
    WHERE l2.l_partkey = p_partkey)`` (TPC-H Q17) joins the grouped table once, as the SELECT-list form does, and
    the filter compares with its column. The column has the subquery's value on every outer row (NULL where the
    subquery had no rows, 0 for a count), so the filter keeps the same rows; WHERE runs before grouping, so a
    grouped outer query's GROUP BY is left as it is. One rule for both places, so that a query helped by
    decorrelating its SELECT list demonstrates the rule to a query with the same subquery in its filter, which is
    what the retrieved demonstrations are for (sqlglot's ``unnest_subqueries`` decorrelates the filter only, in
    its own forms).
    """
    return _unnest_scalar(expression, where=True)


def _unnest_scalar(expression: Any, *, where: bool) -> Any:
    """Decorrelate the scalar subqueries of every SELECT's list (and of its WHERE when ``where``), see
    :func:`unnest_select_subqueries`."""
    from sqlglot import exp

    taken = {table.alias_or_name for table in expression.find_all(exp.Table)}
    counter = 0
    for select in list(expression.find_all(exp.Select)):
        outer = _sources(select)
        clauses = [(projection, True) for projection in select.expressions]
        if where and select.args.get("where") is not None:
            clauses.append((select.args["where"], False))
        for clause, in_projection in clauses:
            for subquery in list(clause.find_all(exp.Subquery)):
                if not isinstance(subquery.this, exp.Select) or subquery.find_ancestor(exp.Select) is not select \
                        or isinstance(subquery.parent, (exp.In, exp.Exists, exp.Any, exp.All)):
                    continue  # not a scalar subquery of this SELECT
                plan = _plan(subquery.this, outer)
                if plan is None:
                    continue
                while f"_u{counter}" in taken:
                    counter += 1
                alias = f"_u{counter}"
                taken.add(alias)
                _attach(select, subquery, plan, alias, group=in_projection)
    return expression


def _sources(select: Any) -> set[str]:
    """Aliases (or names) of the tables and derived tables in ``select``'s FROM and JOINs."""
    source = _from(select)
    items = ([source.this] if source is not None else []) + [join.this for join in select.args.get("joins") or []]
    return {item.alias_or_name for item in items}


def _from(select: Any) -> Any:
    """``select``'s FROM clause, or None (sqlglot names the argument ``from_`` since 28, ``from`` before)."""
    return select.args.get("from_", select.args.get("from"))


def _conjuncts(condition: Any) -> list[Any]:
    from sqlglot import exp

    return list(condition.flatten()) if isinstance(condition, exp.And) else [condition]


def _value_kind(value: Any) -> str | None:
    """``count`` (exactly one COUNT), ``null`` (NULL on no rows, like a LEFT JOIN's miss) or None (not transformed)."""
    from sqlglot import exp

    if isinstance(value, exp.Count):
        return "count"

    def nullish(node: Any) -> bool | None:
        """True: NULL on no rows; False: a constant; None: anything else."""
        if isinstance(node, (exp.Sum, exp.Avg, exp.Min, exp.Max)):
            return None if node.this.find(exp.AggFunc, exp.Subquery, exp.Window) else True
        if isinstance(node, (exp.Literal, exp.DataType)):
            return False
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Paren, exp.Neg, exp.Cast)):
            kinds = [nullish(child) for child in node.iter_expressions()]
            return None if None in kinds else any(kinds)  # arithmetic is NULL when an operand is
        return None

    return "null" if nullish(value) else None


def _plan(inner: Any, outer: set[str]) -> dict[str, Any] | None:
    """How to decorrelate ``inner`` (a scalar subquery of a SELECT whose sources are ``outer``), or None."""
    from sqlglot import exp

    if any(inner.args.get(arg) for arg in ("group", "having", "limit", "offset", "distinct", "order", "with", "qualify")):
        return None
    if len(inner.expressions) != 1 or inner.find(exp.Window) or _from(inner) is None:
        return None
    local = _sources(inner)
    nested = {table.alias_or_name for sub in inner.find_all(exp.Select) if sub is not inner for table in sub.find_all(exp.Table)}
    nested |= {sub.alias_or_name for sub in inner.find_all(exp.Subquery) if sub is not inner and sub.alias}

    def outer_columns(node: Any) -> list[Any] | None:
        """Columns of ``node`` bound to the outer query; None when one is bound to neither (not transformed)."""
        found = []
        for column in node.find_all(exp.Column):
            if column.table in local or column.table in nested:
                continue
            if not column.table or column.table not in outer:
                return None
            found.append(column)
        return found

    value = inner.expressions[0].unalias()
    kind = _value_kind(value)
    if kind is None or outer_columns(value) != []:
        return None
    for join in inner.args.get("joins") or []:
        if outer_columns(join) != []:
            return None
    keep, keys = [], []
    where = inner.args.get("where")
    for conjunct in _conjuncts(where.this) if where else []:
        columns = outer_columns(conjunct)
        if columns is None:
            return None
        if not columns:
            keep.append(conjunct)
            continue
        if not isinstance(conjunct, exp.EQ):
            return None
        left, right = conjunct.this, conjunct.expression
        for inner_side, outer_side in ((left, right), (right, left)):
            if outer_columns(inner_side) == [] and inner_side.find(exp.Column) and not inner_side.find(exp.Subquery) \
                    and len(outer_columns(outer_side) or []) == len(list(outer_side.find_all(exp.Column))) > 0:
                keys.append((inner_side, outer_side))
                break
        else:
            return None
    if not keys:
        return None
    return {"inner": inner, "value": value, "kind": kind, "keep": keep, "keys": keys}


def _attach(select: Any, subquery: Any, plan: dict[str, Any], alias: str, *, group: bool) -> None:
    """Rewrite ``select`` per ``plan``: the grouped derived table joins as ``alias``, the subquery becomes its column
    (added to a grouped ``select``'s GROUP BY when ``group``: a SELECT-list column outside any aggregate)."""
    from sqlglot import exp

    derived = plan["inner"].copy()
    key_names = [f"_k{i}" for i in range(len(plan["keys"]))]
    derived.set("expressions", [exp.alias_(inner.copy(), name) for (inner, _), name in zip(plan["keys"], key_names)]
                + [exp.alias_(plan["value"].copy(), "_v")])
    derived.set("where", exp.Where(this=exp.and_(*[c.copy() for c in plan["keep"]])) if plan["keep"] else None)
    derived.set("group", exp.Group(expressions=[inner.copy() for inner, _ in plan["keys"]]))
    condition = exp.and_(*[exp.EQ(this=exp.column(name, table=alias), expression=outer.copy())
                           for (_, outer), name in zip(plan["keys"], key_names)])
    for join in select.args.get("joins") or []:
        if not join.args.get("kind") and not join.args.get("side") and not join.args.get("on") and not join.args.get("using"):
            join.set("kind", "CROSS")
    select.append("joins", exp.Join(this=exp.Subquery(this=derived, alias=exp.TableAlias(this=exp.to_identifier(alias))),
                                    side="LEFT", on=condition))
    column = exp.column("_v", table=alias)
    inside_aggregate = subquery.find_ancestor(exp.AggFunc) is not None
    subquery.replace(exp.Coalesce(this=column, expressions=[exp.Literal.number(0)]) if plan["kind"] == "count" else column.copy())
    if group and select.args.get("group") and not inside_aggregate:
        select.args["group"].append("expressions", column)


def simplify_case_predicates(expression: Any) -> Any:
    """Replace CASE expressions compared in a filter by the plain predicates they hide.

    In a WHERE, HAVING or JOIN ... ON conjunct (only its truth matters there):

    - ``CASE WHEN c THEN x [ELSE NULL] END <op> y`` becomes ``c AND x <op> y`` (both are true exactly when c is
      and x <op> y is; otherwise the CASE is NULL and the comparison not true);
    - ``CASE WHEN c THEN a ELSE b END = k`` with literals ``a = k`` and ``b <> k`` becomes ``c``.

    PostgreSQL cannot use a join or filter condition hidden in a CASE for a hash join, an index or a selectivity
    estimate (TPC-Havoc's CASE forms of TPC-H Q5/Q8: 4-20x slower than the plain query); sqlglot's ``simplify``
    leaves such CASEs as they are.
    """
    from sqlglot import exp

    comparisons = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
    for clause in list(expression.find_all(exp.Where, exp.Having, exp.Join)):
        condition = clause.args.get("on") if isinstance(clause, exp.Join) else clause.this
        if condition is None:
            continue
        changed = False
        parts = []
        for conjunct in _conjuncts(condition):
            plain = _plain_predicate(conjunct, comparisons) if isinstance(conjunct, comparisons) else None
            changed |= plain is not None
            parts.append(plain if plain is not None else conjunct)
        if changed:
            clause.set("on" if isinstance(clause, exp.Join) else "this", exp.and_(*[p.copy() for p in parts]))
    return expression


def _plain_predicate(comparison: Any, comparisons: tuple[type, ...]) -> Any:
    """The plain form of one ``CASE ... <op> value`` conjunct (see :func:`simplify_case_predicates`), or None."""
    from sqlglot import exp

    for case, other, flipped in ((comparison.this, comparison.expression, False), (comparison.expression, comparison.this, True)):
        if not isinstance(case, exp.Case) or case.this is not None or len(case.args.get("ifs") or []) != 1:
            continue
        branch = case.args["ifs"][0]
        condition, value, default = branch.this, branch.args.get("true"), case.args.get("default")
        if default is None or isinstance(default, exp.Null):
            sides = (other.copy(), value.copy()) if flipped else (value.copy(), other.copy())
            return exp.and_(exp.paren(condition.copy()), type(comparison)(this=sides[0], expression=sides[1]))
        if (isinstance(comparison, exp.EQ) and all(isinstance(n, exp.Literal) for n in (value, default, other))
                and _same_literal(value, other) and not _same_literal(default, other)):
            return exp.paren(condition.copy())
    return None


def _same_literal(a: Any, b: Any) -> bool:
    if a.is_string or b.is_string:
        return a.is_string and b.is_string and a.this == b.this
    try:
        return float(a.this) == float(b.this)
    except ValueError:
        return a.this == b.this
