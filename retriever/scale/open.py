"""One call that opens an index folder or an index set, for the CLI, evaluation and the service.

``retriever search``/``eval``/``serve`` dispatch with these: ``load_searcher(path, ...)`` instead of
``Searcher.load(path, ...)``, ``load_hybrid(path, ...)`` instead of ``HybridSearcher.load(path, ...)`` and
``describe(path)`` instead of ``read_manifest(path)``. A set answers with the same methods and result shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indexing.manifest import Manifest, read_manifest
from indexing.set_manifest import is_index_set


def load_searcher(path: str | Path, **options: Any) -> Any:
    """:class:`retriever.search.searcher.Searcher` of an index, or :class:`~retriever.scale.set_searcher.SetSearcher`
    of a set (``options`` as :meth:`Searcher.load`). Raises what they raise (IndexDirError for neither)."""
    if is_index_set(path):
        from retriever.scale.set_searcher import SetSearcher

        return SetSearcher.load(path, **options)
    from retriever.search.searcher import Searcher

    return Searcher.load(path, **options)


def load_hybrid(path: str | Path, **options: Any) -> Any:
    """:class:`retriever.search.hybrid.HybridSearcher` of an index, or
    :class:`~retriever.scale.set_hybrid.SetHybridSearcher` of a set (``options`` as :meth:`HybridSearcher.load`)."""
    if is_index_set(path):
        from retriever.scale.set_hybrid import SetHybridSearcher

        return SetHybridSearcher.load(path, **options)
    from retriever.search.hybrid import HybridSearcher

    return HybridSearcher.load(path, **options)


def describe(path: str | Path) -> Manifest:
    """The manifest of an index, or the summary manifest of a set (:func:`indexing.set_open.summary`).

    Raises:
        IndexDirError: neither an index nor a set, or an invalid manifest.
    """
    if is_index_set(path):
        from indexing.set_manifest import read_set_manifest
        from indexing.set_open import summary

        return summary(read_set_manifest(Path(path)))
    return read_manifest(Path(path))
