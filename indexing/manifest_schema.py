"""The JSON schema of ``manifest.json`` and one-line messages for what breaks it.

Every reader parses the manifest through :func:`check_manifest` (called by
:func:`indexing.manifest.read_manifest`), so code that uses a manifest may rely on the types below:
``manifest.counts["documents"]`` is an int, ``manifest.metric`` is ``"ip"`` or ``"l2"``, every file
name is a plain name inside the index folder, and so on. Objects that only describe (``build``, the
open parts of ``encoder``, ``counts``, ``chunking`` and ``extras``) may hold more keys than listed.

``jsonschema`` is imported on the first check (about 0.1-0.3 s), not with this module.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

PLAIN_NAME = r"^(?!\.)[^/\\\x00-\x1f\x7f]+(?!\n)$"  # (?!\n): Python's $ also matches before a final newline
"""A file or folder name directly inside the index folder: no ``/`` or ``\\``, no control character,
not ``.``/``..``, no leading dot."""

NOT_PLAIN = "is not a plain file name in the index folder (no '/', '\\', control character or leading '.')"
CHECKSUM = r"^sha256:[0-9a-f]{64}$"

_INT = {"type": "integer"}
_COUNT = {"type": "integer", "minimum": 0}
_OPT_STR = {"type": ["string", "null"]}
_NAME = {"type": "string", "pattern": PLAIN_NAME, "x-message": NOT_PLAIN}
_NAME_KEYS = {"pattern": PLAIN_NAME, "x-message": NOT_PLAIN}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "retriever index manifest",
    "type": "object",
    "required": ["version", "encoder", "dim", "metric", "factory", "factory_requested", "files", "checksums",
                 "sizes", "counts", "chunking", "format_version"],
    "additionalProperties": False,
    "properties": {
        "version": {"type": "integer", "minimum": 1},
        "format_version": {"type": "integer", "minimum": 1},
        "encoder": {
            "type": "object",
            "required": ["model", "dim", "normalized"],
            "properties": {
                "model": _OPT_STR,
                "path": _OPT_STR,
                "preset": _OPT_STR,
                "dim": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                "normalized": {"type": "boolean"},
                "pooling": _OPT_STR,
                "query_prefix": _OPT_STR,
                "document_prefix": _OPT_STR,
                "preprocessor": _OPT_STR,
                "max_seq_length": {"type": ["integer", "null"], "minimum": 1},
                "transliterate": {
                    "type": ["object", "null"],
                    "properties": {"documents": {"type": "boolean"}, "queries": {"type": "boolean"}, "tool": {"type": "string"}},
                },
            },
        },
        "dim": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
        "metric": {"enum": ["ip", "l2"]},
        "factory": {"type": "string", "minLength": 1},
        "factory_requested": {"type": "string", "minLength": 1},
        "files": {
            "type": "object",
            "required": ["docstore"],
            "anyOf": [{"required": ["index"]}, {"required": ["shard.0"]}],
            "x-message": "needs an 'index' or a 'shard.0' role",
            "propertyNames": {"minLength": 1},
            "additionalProperties": _NAME,
        },
        "checksums": {
            "type": "object",
            "propertyNames": _NAME_KEYS,
            "additionalProperties": {"type": "string", "pattern": CHECKSUM, "x-message": "is not 'sha256:' and 64 hex digits"},
        },
        "sizes": {"type": "object", "propertyNames": _NAME_KEYS, "additionalProperties": _COUNT},
        "counts": {
            "type": "object",
            "required": ["documents", "passages"],
            "properties": {"documents": _COUNT, "passages": _COUNT, "tombstones": _COUNT},
        },
        "chunking": {
            "type": "object",
            "required": ["chunk_tokens", "overlap"],
            "properties": {"chunk_tokens": _COUNT, "overlap": _COUNT, "max_passages_per_document": _COUNT},
        },
        "build": {"type": "object"},
        "extras": {
            "type": "object",
            "properties": {
                "nprobe": {"type": ["integer", "null"], "minimum": 1},
                "ef_search": {"type": ["integer", "null"], "minimum": 1},
                "content_version": {"type": "integer", "minimum": 1},
                "bm25": {"type": ["object", "null"], "properties": {"dir": _NAME}},
            },
        },
        "created": {"type": "string"},
        "updated": {"type": "string"},
    },
}
"""Draft 2020-12. ``integer`` means a JSON integer (``16``), not ``16.0`` nor ``true``. ``x-message`` keys
are ours: the wording used when the keyword next to them fails."""


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is a string naming an entry directly inside a folder (see :data:`PLAIN_NAME`)."""
    return isinstance(name, str) and re.fullmatch(PLAIN_NAME[1:-1], name) is not None


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator, validators

    strict = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    cls = validators.extend(Draft202012Validator, type_checker=strict)
    cls.check_schema(MANIFEST_SCHEMA)
    return cls(MANIFEST_SCHEMA)


def schema_errors(data: Any) -> list[str]:
    """Every violation of :data:`MANIFEST_SCHEMA` in ``data`` as one-line ``field 'a.b': what`` texts,
    the most relevant first (empty when ``data`` is a valid manifest)."""
    from jsonschema.exceptions import relevance

    errors = sorted(_validator().iter_errors(data), key=relevance, reverse=True)
    return [_describe(error) for error in errors]


def check_manifest(data: Any) -> None:
    """Raise ``ValueError("field 'metric': 'cosine' is not one of ip, l2")`` (one line) for the most relevant
    violation of :data:`MANIFEST_SCHEMA`; return when ``data`` is a valid manifest."""
    messages = schema_errors(data)
    if messages:
        log.debug("manifest has %d schema violation(s): %s", len(messages), messages)
        raise ValueError(messages[0])
    if data["encoder"]["dim"] != data["dim"]:
        raise ValueError(f"field 'encoder.dim': {data['encoder']['dim']} differs from field 'dim' ({data['dim']})")


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a JSON value on one line, cut to about ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: Any) -> str:
    """One line for a ``jsonschema.ValidationError``: which field, and what is wrong with it."""
    path = [str(part) for part in error.absolute_path]
    where, instance, kind, expected = ".".join(path), error.instance, error.validator, error.validator_value
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if "propertyNames" in error.schema_path:
        return f"field '{where}': key {_short(instance)} {custom or 'is not allowed'}"
    if kind == "required":
        missing = next((key for key in expected if key not in instance), expected[0])
        return f"field '{'.'.join(path + [missing])}': missing"
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = sorted(key for key in instance if key not in known)
        return f"field '{'.'.join(path + extra[:1])}': unknown field"
    label = f"field '{where}'" if where else "manifest"
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{label}: expected {wanted}, got {_short(instance)}"
    if kind == "enum":
        return f"{label}: {_short(instance)} is not one of {', '.join(map(str, expected))}"
    if kind == "minimum":
        return f"{label}: {_short(instance)} is less than {expected}"
    if kind == "maximum":
        return f"{label}: {_short(instance)} is more than {expected}"
    if kind == "minLength":
        return f"{label}: must not be empty"
    if custom:
        return f"{label}: {_short(instance)} {custom}" if kind == "pattern" else f"{label}: {custom}"
    return f"{label}: {' '.join(error.message.split())[:200]}"
