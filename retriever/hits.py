"""The result types of every search: :class:`Hit` (one document, with its text) and :class:`Hits` (ids and scores)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

FIELDS: tuple[str, ...] = ("id", "score", "title", "text", "passage", "metadata")
"""A hit's fields, in the order of :meth:`Hit.to_dict` and of :class:`Hit`'s constructor."""


class Hit(tuple):
    """One document in a result list, best first; the shape of ``retriever search --json`` and the HTTP service.

    Attributes (read-only):
        id: document id. score: similarity (higher is better; negated distance for L2 indexes).
        title, text: the document. passage: the best-matching passage (== text when not chunked).
        metadata: the document's other fields, a new dict on each read (changing it changes nothing stored).

    ``Hit(id, score, title, text, passage, metadata)`` makes one by hand. Inside, a hit is the pair
    ``(record, score)``, where ``record`` is the passage's ``(doc_id, title, text, passage, metadata)`` tuple
    that the doc store holds: a search builds tens of thousands of hits per second, and after FAISS has
    scanned its lists the caches are cold, so a hit holding one reference costs one cache miss where
    six copied field references would cost six. Fields are read from the record when asked for.
    """

    __slots__ = ()
    _fields = FIELDS

    def __new__(cls, id: str, score: float, title: str = "", text: str = "", passage: str | None = None,
                metadata: Mapping[str, Any] | None = None) -> Hit:
        record = (id, title, text, text if passage is None else passage, dict(metadata) if metadata else None)
        return tuple.__new__(cls, (record, float(score)))

    @classmethod
    def many(cls, records: Sequence[tuple[str, str, str, str, Mapping[str, Any] | None]], scores: Sequence[float]) -> list[Hit]:
        """One hit per doc-store record ``(doc_id, title, text, passage, metadata)`` (shared, not copied) and score.

        Built in C (``map`` over ``zip``, ``tuple.__new__``): no Python bytecode runs per hit.
        """
        return list(map(tuple.__new__, repeat(cls), zip(records, scores)))

    def rescored(self, score: float) -> Hit:
        """The same document and passage with another score (e.g. a fused one)."""
        return tuple.__new__(type(self), (self[0], score))

    id = property(lambda self: self[0][0], doc="document id")
    score = property(itemgetter(1), doc="similarity, higher is better")
    title = property(lambda self: self[0][1], doc="document title")
    text = property(lambda self: self[0][2], doc="document text")
    passage = property(lambda self: self[0][3], doc="the best-matching passage")

    @property
    def metadata(self) -> dict[str, Any]:
        """The document's other fields (a new dict)."""
        stored = self[0][4]
        return dict(stored) if stored else {}

    def to_dict(self) -> dict[str, Any]:
        """``{id, score, title, text, passage, metadata}``: JSON-ready."""
        doc_id, title, text, passage, _ = self[0]
        return {"id": doc_id, "score": self[1], "title": title, "text": text, "passage": passage, "metadata": self.metadata}

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy.copy / copy.deepcopy rebuild through __new__
        return self.id, self.score, self.title, self.text, self.passage, self.metadata

    def __repr__(self) -> str:
        return f"Hit(id={self.id!r}, score={self.score!r}, title={self.title!r}, text={_short(self.text)!r}, metadata={self.metadata!r})"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Hits(NamedTuple):
    """One query's results, best first.

    Attributes:
        ids: document (or passage) ids, length ``k'`` <= k (fewer when the index holds fewer).
        scores: ``(k',)`` float32, higher is better, aligned with ``ids``.
    """

    ids: list[str]
    scores: np.ndarray
