"""Transliteration to Latin script with ``uroman`` (the romanizer TransliCo used), as a preprocessing step.

```python
from retriever.encoders.crosslingual.transliterate import romanize
romanize(["Привет, мир", "नमस्ते"])   # ['Privet, mir', 'namaste']
```

uroman's Python port loads its tables once (about 2 s) and romanizes about 1,000 short sentences per second on
one core; it memoizes every string it has seen, so repeated texts cost nothing. :class:`TransliteratingEncoder`
wraps an encoder so that documents and/or queries are romanized before encoding, and records that in what the
index manifest stores (``encoder.transliterate``), so search and ``index add`` apply the same step.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from indexing.errors import ModelError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'retriever[crosslingual]' (or: pip install uroman)"


@functools.lru_cache(maxsize=1)
def _uroman():
    try:
        import uroman
    except ImportError:
        raise ModelError(f"transliteration needs the uroman package: {INSTALL_HINT}") from None
    log.info("loading uroman tables")
    return uroman.Uroman()


def romanize(texts: Sequence[str], *, lang: str | None = None) -> list[str]:
    """Each text in Latin script (uroman). Text already in Latin script comes back unchanged, except that
    diacritics are dropped (``café`` -> ``cafe``).

    Args:
        texts: strings in any script.
        lang: an ISO 639-3 code (``rus``, ``hin``, ``zho``...) enabling uroman's language-specific rules; None = none.

    Raises:
        ModelError: uroman is not installed.
    """
    engine = _uroman()
    return [engine.romanize_string(text, lcode=lang) if text else text for text in texts]


def is_latin_script(texts: Sequence[str], *, threshold: float = 0.5) -> bool:
    """Whether most letters of ``texts`` (taken together) are Latin script."""
    letters = latin = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                letters += 1
                latin += unicodedata.name(ch, "").startswith("LATIN")
    return letters == 0 or latin / letters >= threshold


def transliteration_of(record: dict[str, Any]) -> dict[str, bool]:
    """The ``transliterate`` setting of a manifest's encoder record (``{"documents": bool, "queries": bool}``)."""
    value = record.get("transliterate") or {}
    return {"documents": bool(value.get("documents", False)), "queries": bool(value.get("queries", False))}


class TransliteratingEncoder:
    """An encoder that romanizes documents and/or queries (uroman) before handing them to ``inner``.

    The texts stored in the doc store and shown in hits stay as written; only what is encoded changes.

    Args:
        inner: any :class:`retriever.encoders.base.Encoder` (it keeps its prefixes and normalization).
        documents: romanize documents (``retriever index build --transliterate``).
        queries: romanize queries (an index built with ``--transliterate`` does this for every search;
            ``retriever search --transliterate`` does it for one).
    """

    def __init__(self, inner: Any, *, documents: bool, queries: bool):
        self.inner = inner
        self.documents = documents
        self.queries = queries
        self.name = inner.name
        self.dim = inner.dim
        self.normalized = inner.normalized
        _uroman()  # fail now (missing package), not at the first batch

    def __getattr__(self, item: str) -> Any:  # tokenizer, max_seq_length, model, spec, ... of the wrapped encoder
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode queries (romanized first when ``queries``) into ``(n, dim)`` float32."""
        return self.inner.encode_queries(romanize(texts) if self.queries else texts, batch_size=batch_size)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode documents (romanized first when ``documents``) into ``(n, dim)`` float32."""
        return self.inner.encode_documents(romanize(texts) if self.documents else texts, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        """The wrapped encoder's record plus ``transliterate: {"documents": bool, "queries": bool, "tool": "uroman"}``."""
        return {**self.inner.describe(), "transliterate": {"documents": self.documents, "queries": self.queries, "tool": "uroman"}}


def with_transliteration(encoder: Any, *, documents: bool = False, queries: bool = False) -> Any:
    """``encoder`` wrapped in a :class:`TransliteratingEncoder`, or unchanged when neither side is romanized."""
    if not (documents or queries):
        return encoder
    if isinstance(encoder, TransliteratingEncoder):
        documents, queries = documents or encoder.documents, queries or encoder.queries
        encoder = encoder.inner
    return TransliteratingEncoder(encoder, documents=documents, queries=queries)
