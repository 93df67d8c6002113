"""Dense retrieval: encoders, presets, model resolution, the Searcher, BM25 and hybrid fusion.

Heavy modules (torch, faiss) load on first use, not at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retriever.search.hybrid import HybridSearcher
    from retriever.index import Index
    from retriever.hits import Hit
    from retriever.search.searcher import Searcher

__all__ = ["Index", "Searcher", "Hit", "HybridSearcher"]
_HOMES = {"Index": "retriever.index", "Searcher": "retriever.search.searcher", "Hit": "retriever.hits",
          "HybridSearcher": "retriever.search.hybrid"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(name)
