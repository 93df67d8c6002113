"""Request and response models of the query service, and its limits.

The models are the OpenAPI schema: every limit (k, number of queries, query length) is in it, so a
client (or schemathesis) can read what the service accepts. The request models depend on the
:class:`Limits` of one service, so :func:`request_model` builds them per application.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model, model_validator
from pydantic_core import PydanticCustomError

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")

WHITESPACE = "\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
"""Every character Python's ``str.isspace`` or ECMAScript's ``\\s`` calls whitespace, as a regex class body.

Spelt out because ``\\S`` differs between regex engines (U+0085 is whitespace to Python and Rust,
not to ECMAScript), and the schema is read by all three: pydantic (Rust), schema tools (Python, ECMA).
"""

NOT_BLANK = rf"[^{WHITESPACE}]"
"""A query must hold a character other than whitespace (the pattern matches anywhere in the string)."""

FILTER_FIELD = r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,63}$"
"""Metadata field names a filter may name (letters, digits, ``_ . -`` and spaces; at most 64 characters)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a 4xx naming the limit.

    Attributes:
        max_k: largest ``k`` (documents per query).
        max_queries: most queries in one ``{"queries": [...]}`` request.
        max_query_chars: longest query, in characters (Unicode code points).
        max_body_bytes: largest request body, in bytes (checked before parsing: 413).
        max_filters: most ``field=value`` metadata filters per request.
    """

    max_k: int = 1000
    max_queries: int = 128
    max_query_chars: int = 2048
    max_body_bytes: int = 1 << 20
    max_filters: int = 8

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1 (got {value})")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def request_model(limits: Limits) -> type[BaseModel]:
    """The ``POST /search`` body model for ``limits``: exactly one of ``query`` / ``queries``, plus options.

    Unknown fields are refused (a misspelt ``mdoe`` must not silently search densely). Absent fields
    default to None but ``null`` is refused, so the schema states exactly what is accepted.
    """
    # A blank query means nothing. The pattern states it in the schema; the validator applies it with
    # Python's notion of whitespace (str.isspace), the one schema tools generate test data with.
    text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_query_chars, pattern=NOT_BLANK),
                     AfterValidator(_not_blank)]
    field = Annotated[str, StringConstraints(pattern=FILTER_FIELD)]
    value = Annotated[str, StringConstraints(max_length=limits.max_query_chars)]

    def exactly_one(self: Any) -> Any:
        if (self.query is None) == (self.queries is None):
            raise PydanticCustomError("query_or_queries", 'give exactly one of "query" (a string) or "queries" (a list of strings)')
        return self

    return create_model(
        "SearchRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"oneOf": [{"required": ["query"]}, {"required": ["queries"]}]},
        ),
        __doc__="One query (``query``) or a batch (``queries``), with the number of documents ``k`` and the mode.",
        __validators__={"exactly_one": model_validator(mode="after")(exactly_one)},
        query=(text, Field(None, json_schema_extra=_no_default, description=f"One query, 1..{limits.max_query_chars} characters, not only whitespace.")),
        queries=(
            list[text],
            Field(None, min_length=1, max_length=limits.max_queries, json_schema_extra=_no_default,
                  description=f"A batch of 1..{limits.max_queries} queries, answered in order."),
        ),
        k=(JsonInteger, Field(10, ge=1, le=limits.max_k, description="Documents per query.")),
        mode=(Mode, Field("dense", description="dense (vectors), bm25 (needs Java on the server) or hybrid (fused).")),
        filters=(
            dict[field, value],
            Field(None, max_length=limits.max_filters, json_schema_extra=_only_pattern_keys,
                  description="Metadata filters field -> value (string compare), applied before top-k."),
        ),
    )


def _json_integer(value: Any) -> Any:
    """JSON Schema's ``integer``: ``10`` and ``10.0`` are one, ``true`` and ``"10"`` are not integers."""
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]
"""An ``int`` as JSON Schema reads one (pydantic's lax mode would coerce booleans and numeric strings)."""


def _not_blank(text: str) -> str:
    if re.search(NOT_BLANK, text) is None:
        raise PydanticCustomError("blank", "String should hold a character other than whitespace")
    return text


def _no_default(schema: dict[str, Any]) -> None:
    """An absent field is None inside, but ``null`` is not accepted: the schema shows no default."""
    schema.pop("default", None)


def _only_pattern_keys(schema: dict[str, Any]) -> None:
    """Filter keys must match :data:`FILTER_FIELD` (pydantic states the pattern but not that others are refused)."""
    _no_default(schema)
    schema["additionalProperties"] = False


class Hit(BaseModel):
    """One document, best first; the hit object of ``retriever search --json``."""

    id: str
    score: float = Field(description="Similarity (higher is better): cosine/inner product, BM25 or fused score.")
    title: str
    text: str
    passage: str = Field(description="The best-matching passage (the text when the index is not chunked).")
    metadata: dict[str, Any]


class QueryResult(BaseModel):
    """The answer to ``{"query": ...}``."""

    query: str
    hits: list[Hit]


class BatchResult(BaseModel):
    """The answer to ``{"queries": [...]}``: one result per query, in order."""

    results: list[QueryResult]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: int = Field(description="The manifest version being served.")


class Info(BaseModel):
    """A summary of the served index (its manifest) and of the service's limits."""

    path: str
    version: int
    documents: int
    passages: int
    deleted_pending_compaction: int
    dim: int
    metric: str
    factory: str
    model: Optional[str]
    preset: Optional[str]
    chunking: dict[str, int]
    updated: str
    modes: list[Mode]
    limits: dict[str, int]
    api_key_required: bool
    stats: dict[str, int] = Field(description="Since start: batches searched, queries in them, index reloads.")


class Error(BaseModel):
    """Every 4xx/5xx body: a one-line ``error`` and, for invalid requests, the per-field ``detail``."""

    error: str
    detail: Optional[list[dict[str, Any]]] = None
