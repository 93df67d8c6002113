"""The SQL encoder: a query's structure (joins, nesting, subqueries, predicates) before its literal-free text."""
