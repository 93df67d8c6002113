"""SQL query-rewrite demonstrations (LLM-R2-style): workloads, a private PostgreSQL, rewrite rules, result
equivalence, the demonstration pool and its retrieval.

Modules: :mod:`.workloads` (TPC-H/TPC-DS data and queries), :mod:`.postgres` (a private cluster, timed runs),
:mod:`.rules` (sqlglot optimizer rules as candidate rewrites), :mod:`.equivalence` (result comparison),
:mod:`.pool` (building and reading the pool), :mod:`.demos` (retrieval, rule voting, prompts).
"""
