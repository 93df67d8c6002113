"""Code preprocessing a text model can read: identifiers split into words, kept next to the raw code.

``parseHTTPResponse`` and ``parse_http_response`` both read as ``parse http response``. A WordPiece
tokenizer lower-cases ``parseHTTPResponse`` into ``parsehttpresponse`` and cuts it into sub-words that
carry little meaning; the split words restore it. The raw code stays, so nothing is lost.

The same function is applied to queries and documents (a query that names ``readFile`` matches a
document that defines it), and the index manifest records its name so search time does the same.
Hand-written: no maintained library splits identifiers this way (regexes, no dependency).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

PREPROCESSOR = "code-identifiers-v1"
"""The name recorded in manifests and model cards for :func:`preprocess_code`."""


def split_identifier(name: str) -> list[str]:
    """Lower-case words of an identifier, split at underscores, case changes and digit runs.

    >>> split_identifier("parseHTTPResponse2_code")
    ['parse', 'http', 'response', '2', 'code']
    >>> split_identifier("__init__")
    ['init']
    """
    return [w.lower() for w in _WORD.findall(name)]


def compound_identifiers(text: str) -> Iterable[tuple[str, list[str]]]:
    """``(identifier, words)`` for every identifier in ``text`` that splits into two words or more, in order."""
    for match in _IDENTIFIER.finditer(text):
        words = split_identifier(match.group())
        if len(words) > 1:
            yield match.group(), words


def preprocess_code(text: str) -> str:
    """``text`` with the words of each compound identifier written after it: ``readFile(`` -> ``readFile read file(``.

    It only adds text (apply it once: on its own output it would add the words again). Identifiers inside strings and comments are split too (docstrings mention identifiers).
    Plain English passes through unchanged (a word like ``Python`` is one word).
    """

    def expand(match: re.Match[str]) -> str:
        name = match.group()
        words = split_identifier(name)
        if len(words) < 2:
            return name
        return f"{name} {' '.join(words)}"

    return _IDENTIFIER.sub(expand, text)

