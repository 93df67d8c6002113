"""Plain records that flow from readers through chunking into the index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One corpus record.

    Attributes:
        id: unique string id within the corpus.
        title: may be empty.
        text: the body; may be empty only when the title is not (readers raise on missing text).
        metadata: every other field of the record, JSON-serializable.
        origin: where the record came from, ``"path:line"`` (or just the path), for error messages.
    """

    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)

    def full_text(self) -> str:
        """Title and text joined the way BEIR feeds documents to sentence-transformers models."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class Passage:
    """A window of a document that gets its own vector.

    Attributes:
        doc_id: id of the parent document.
        index: position of this passage within the document (0-based).
        start, end: character offsets of the passage in ``Document.text`` (end exclusive).
        text: the passage text (``Document.text[start:end]``).
    """

    doc_id: str
    index: int
    start: int
    end: int
    text: str
