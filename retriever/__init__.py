"""Dense retrieval: encoders, presets, model resolution, the Searcher, BM25 and hybrid fusion.

Heavy modules (torch, faiss) load on first use, not at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retriever.searcher import Hit, Searcher

__all__ = ["Searcher", "Hit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from retriever import searcher

        return getattr(searcher, name)
    raise AttributeError(name)
