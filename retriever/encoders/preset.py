"""What a preset is. Each specialized encoder folder defines one (``<folder>/preset.py``); the registry is
:mod:`retriever.encoders.presets`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Preset:
    """Attributes:
    name: the preset's name, recorded in manifests and model folders.
    default_model: the model alias or path used when no ``--model`` is given; None = a model must be given
        (a model trained with ``retriever train``).
    description: one line for ``--help`` and ``retriever index info``.
    preprocessor: the name of a text preprocessor applied alike to queries and documents before encoding,
        recorded in the manifest (a new behaviour gets a new name); None = texts go to the model as they are.
    preprocess: the function that name stands for (``str -> str``); None when there is no preprocessor.
    documents: how ``retriever index build`` reads its input: ``corpus`` (JSONL/TSV/... documents),
        ``urls`` (one URL per line, or TSV/CSV/JSONL records with a ``url`` field) or ``code`` (source trees).
    """

    name: str
    default_model: str | None
    description: str
    preprocessor: str | None = None
    preprocess: Callable[[str], str] | None = None
    documents: Literal["corpus", "urls", "code"] = "corpus"
