"""Encoder presets: an explicit registry, never guessed from a model name.

A preset names a default base model, the preprocessing its documents and queries need (by a name that
the index manifest records, so search applies exactly what the build applied) and how its input is read.
Each specialized encoder defines its preset in its own folder (``retriever/encoders/<name>/preset.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from indexing.errors import ModelError
from retriever.encoders.code.preset import PRESET as CODE
from retriever.encoders.crosslingual.preset import PRESET as CROSSLINGUAL
from retriever.encoders.preset import Preset
from retriever.encoders.sql.preset import PRESET as SQL
from retriever.encoders.text.preset import PRESET as TEXT
from retriever.encoders.url.preset import PRESET as URL

PRESETS: dict[str, Preset] = {p.name: p for p in (TEXT, CROSSLINGUAL, URL, CODE, SQL)}

PREPROCESSORS: dict[str, Callable[[str], str]] = {
    p.preprocessor: p.preprocess for p in PRESETS.values() if p.preprocessor is not None and p.preprocess is not None
}
"""Text preprocessors by the name a preset and a manifest record."""

DEFAULT_PRESET = "text"

__all__ = ["DEFAULT_PRESET", "PREPROCESSORS", "PRESETS", "Preset", "get_preset", "preprocessor_function"]


def get_preset(name: str) -> Preset:
    """The registered preset ``name``.

    Raises:
        ModelError: unknown preset (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown encoder preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None


def preprocessor_function(name: str | None) -> Callable[[str], str]:
    """The text function registered as ``name`` (identity for None).

    Raises:
        ModelError: a name this version does not know (e.g. an index built by a newer version).
    """
    if name is None:
        return lambda text: text
    try:
        return PREPROCESSORS[name]
    except KeyError:
        raise ModelError(f"unknown preprocessor {name!r}; this version knows {', '.join(sorted(PREPROCESSORS))}") from None
