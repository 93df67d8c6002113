"""The ``sql`` preset: a query's structure before its literal-free text (sqlglot loads on first use)."""

from retriever.encoders.preset import Preset


def sql_structure(sql: str) -> str:
    """``sql-structure-v1``: see :func:`retriever.encoders.sql.structure.sql_structure_text`."""
    from retriever.encoders.sql.structure import sql_structure_text

    return sql_structure_text(sql)


PRESET = Preset("sql", "minilm", "SQL queries: structure (joins, nesting, subqueries, predicates) before the literal-free text "
                "(base all-MiniLM-L6-v2; train with `retriever train sql`)",
                preprocessor="sql-structure-v1", preprocess=sql_structure)
