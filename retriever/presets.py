"""Encoder presets: an explicit registry, never guessed from a model name.

A preset names a default base model and the preprocessing its documents and queries need. Later
presets (url, sql) register here when their preprocessing exists.
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
    preprocessor: the name of a text preprocessor (see :mod:`retriever.code_text`) applied alike to queries and
        documents before encoding, recorded in the manifest; None = texts go to the model as they are.
    """

    name: str
    default_model: str
    description: str
    preprocessor: str | None = None


PRESETS: dict[str, Preset] = {
    "text": Preset("text", "minilm", "English text (all-MiniLM-L6-v2)"),
    "crosslingual": Preset("crosslingual", "multilingual-e5-small", "multilingual text (multilingual-e5-small)"),
    "code": Preset("code", "minilm", "source code: identifiers split into words next to the raw code (base all-MiniLM-L6-v2)",
                   preprocessor="code-identifiers-v1"),
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
