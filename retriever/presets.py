"""Encoder presets: an explicit registry, never guessed from a model name.

A preset names a default base model, the preprocessing its documents and queries need (by a name that
the index manifest records, so search applies exactly what the build applied) and how its input is read.
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
    preprocessor: the name of a text preprocessor (see :data:`PREPROCESSORS`) applied alike to queries and
        documents before encoding, recorded in the manifest; None = texts go to the model as they are.
    documents: how ``retriever index build`` reads its input: ``corpus`` (JSONL/TSV/... documents),
        ``urls`` (one URL per line, or TSV/CSV/JSONL records with a ``url`` field) or ``code`` (source trees).
    """

    name: str
    default_model: str | None
    description: str
    preprocessor: str | None = None
    documents: Literal["corpus", "urls", "code"] = "corpus"


def _code_identifiers(text: str) -> str:
    from retriever.code_text import preprocess_code

    return preprocess_code(text)


def _url_pieces(url: str) -> str:
    from retriever.url_tokens import url_text  # imported on first use: tldextract stays off the CLI's startup path

    return url_text(url)


def _sql_structure(sql: str) -> str:
    from retriever.sql_features import sql_structure_text  # sqlglot is imported on first use

    return sql_structure_text(sql)


PREPROCESSORS: dict[str, Callable[[str], str]] = {
    "sql-structure-v1": _sql_structure,
    "code-identifiers-v1": _code_identifiers,
    "url-pieces-v1": _url_pieces,
}
"""Text preprocessors by the name a preset and a manifest record (a new behaviour gets a new name)."""

PRESETS: dict[str, Preset] = {
    "text": Preset("text", "minilm", "English text (all-MiniLM-L6-v2)"),
    "crosslingual": Preset("crosslingual", "multilingual-e5-small", "multilingual text (multilingual-e5-small)"),
    "url": Preset("url", None, "URLs (a model from `retriever train url`; URL-aware pre-tokenization)",
                  preprocessor="url-pieces-v1", documents="urls"),
    "code": Preset("code", "minilm", "source code: identifiers split into words next to the raw code (base all-MiniLM-L6-v2)",
                   preprocessor="code-identifiers-v1", documents="code"),
    "sql": Preset("sql", "minilm", "SQL queries: structure (joins, nesting, subqueries, predicates) before the literal-free text "
                  "(base all-MiniLM-L6-v2; train with `retriever train sql`)", preprocessor="sql-structure-v1"),
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
