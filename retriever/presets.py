"""Encoder presets: an explicit registry, never guessed from a model name.

A preset names a default base model and the preprocessing its documents and queries need. Later
presets (code, url, sql) register here when their preprocessing exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from indexing.errors import ModelError


@dataclass(frozen=True)
class Preset:
    """Attributes:
    name: the preset's name, recorded in manifests and model folders.
    default_model: the model alias or path used when no ``--model`` is given.
    description: one line for ``--help`` and ``retriever index info``.
    """

    name: str
    default_model: str
    description: str


PRESETS: dict[str, Preset] = {
    "text": Preset("text", "minilm", "English text (all-MiniLM-L6-v2)"),
    "crosslingual": Preset("crosslingual", "multilingual-e5-small", "multilingual text (multilingual-e5-small)"),
}

DEFAULT_PRESET = "text"


def get_preset(name: str) -> Preset:
    """The registered preset ``name``.

    Raises:
        ModelError: unknown preset (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown encoder preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None
