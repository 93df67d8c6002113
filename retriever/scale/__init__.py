"""Search past one index folder: index sets (N shard indexes, see :mod:`indexing.set_manifest`) searched as one.

:func:`retriever.scale.open.load_searcher` / :func:`~retriever.scale.open.load_hybrid` open an index or a set
with one call; :mod:`retriever.scale.merge` merges per-shard top-k lists exactly (also used by the Ray service).
"""
