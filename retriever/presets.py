"""Encoder presets: an explicit registry, never guessed from a model name.

A preset names a default base model and the preprocessing its documents and queries need. Later
presets (code, sql) register here when their preprocessing exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from indexing.errors import ModelError


@dataclass(frozen=True)
class Preset:
    """Attributes:
    name: the preset's name, recorded in manifests and model folders.
    default_model: the model alias or path used when no ``--model`` is given; None = a model must be given
        (a model trained with ``retriever train``).
    description: one line for ``--help`` and ``retriever index info``.
    preprocess: applied to every document and query before the model's tokenizer (None = text as is).
    documents: how ``retriever index build`` reads its input: ``corpus`` (JSONL/TSV/... documents) or
        ``urls`` (one URL per line, or TSV/CSV/JSONL records with a ``url`` field).
    """

    name: str
    default_model: str | None
    description: str
    preprocess: Callable[[str], str] | None = None
    documents: Literal["corpus", "urls"] = "corpus"


def _url_text(url: str) -> str:
    from retriever.url_tokens import url_text  # imported on first use: tldextract stays off the CLI's startup path

    return url_text(url)


PRESETS: dict[str, Preset] = {
    "text": Preset("text", "minilm", "English text (all-MiniLM-L6-v2)"),
    "crosslingual": Preset("crosslingual", "multilingual-e5-small", "multilingual text (multilingual-e5-small)"),
    "url": Preset("url", None, "URLs (a model from `retriever train url`; URL-aware pre-tokenization)", _url_text, "urls"),
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
