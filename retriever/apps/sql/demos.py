"""Retrieve demonstrations from a pool, vote on rules, and write an LLM-R2-style prompt.

The pool's queries are encoded (with the encoder's preset: ``sql`` reads structure, ``text`` reads raw SQL)
into an exact FAISS index; a new query's ``k`` nearest pool queries are its demonstrations. By default only
*helped* pool queries (some rule set made them at least 2x faster) can be demonstrations, as in LLM-R2, whose pool
holds queries with their effective rewrites: a demonstration that nothing helped proposes nothing, so a query
whose nearest neighbours were not helped would get no candidate at all. Each demonstration
votes for every candidate rule set with the effect measured on it (``log`` speedup, 0 when the rules did not
apply or changed the result, and 0 inside the noise band, see :func:`retriever.apps.sql.records.gated_log_speedup`); the
rule set with the highest total is chosen, or none when no total is positive. Gating matters: summing every
measured 1.2x picks whichever rule set was lucky on the demonstrations, and the held-out query pays for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import RetrieverError
from retriever.apps.sql.apply import unchanged
from retriever.apps.sql.records import HELPFUL, candidate_log_speedup, gated_log_speedup, is_helped, label_of
from retriever.apps.sql.rules import CANDIDATES, apply_rules, rule_key

log = logging.getLogger(__name__)

PLANNER_RATIO = 0.5
""":func:`planner_checked` applies a rewrite only when the planner expects it to halve the cost: the pool's own bar
for "helped" (:data:`retriever.apps.sql.records.HELPFUL`, 2x), fixed before any held-out query was planned."""

TRIAL_SPEEDUP = HELPFUL
""":func:`timed_checked` applies a rewrite only when a trial measured it at least this much faster: the pool's bar
for "helped" (:data:`retriever.apps.sql.records.HELPFUL`, 2x), below which medians of 3 runs on a busy machine are noise."""


DEMONSTRATIONS_FROM = ("helped", "all")
"""Which pool queries may be demonstrations: ``helped`` ones only (LLM-R2's pool of effective rewrites) or ``all``."""


@dataclass(frozen=True)
class Demonstration:
    """One retrieved pool query: its id, template, SQL, best rules (``[]`` = leave it), measured speedup, similarity."""

    id: str
    template: str
    sql: str
    rules: list[str]
    speedup: float | None
    score: float


class DemoRetriever:
    """Exact nearest-neighbour search over a pool's queries with one encoder.

    Args:
        records: pool records (only those whose original ran are used).
        demos_from: ``helped`` (default): only records some rule set helped (:func:`retriever.apps.sql.records.label_of` is
            not ``none``) can be demonstrations; ``all``: every record, "nothing helped" examples included.
        encoder: an :class:`retriever.encoders.base.Encoder` (its preset decides how SQL is read).
        schemas: ``{workload: {table: {column: type}}}`` (the pool manifest's); when given, pool queries and new
            queries are read with their columns bound to tables (:func:`retriever.encoders.sql.structure.qualified_sql`),
            which the ``sql`` preset needs to tell correlated subqueries from independent ones. A new query's
            workload is the one whose tables it reads.
    Raises:
        RetrieverError: no usable record (with ``helped``: no helped record), or an unknown ``demos_from``.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], encoder: Any, *, batch_size: int = 32,
                 schemas: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None, demos_from: str = "helped"):
        from indexing.faiss_index import Metric, VectorIndex

        if demos_from not in DEMONSTRATIONS_FROM:
            raise RetrieverError(f"--demos must be one of {', '.join(DEMONSTRATIONS_FROM)} (got {demos_from!r})")
        self.records = [r for r in records if r.get("original", {}).get("status") == "ok"]
        if not self.records:
            raise RetrieverError("the pool has no query that ran; nothing to retrieve")
        if demos_from == "helped":
            self.records = [r for r in self.records if is_helped(r)]
            if not self.records:
                raise RetrieverError(f"the pool has no helped query (no verified rewrite reached {HELPFUL:g}x); "
                                     "use --demos all to retrieve among every query")
        self.encoder = encoder
        self.schemas = dict(schemas or {})
        texts = [self.readable(r["sql"], r.get("workload")) for r in self.records]
        vectors = encoder.encode_documents(texts, batch_size=batch_size)  # (n, dim)
        self.index = VectorIndex.create(vectors.shape[1], "Flat", Metric.IP)
        self.index.add(np.arange(len(self.records), dtype=np.int64), vectors)

    def readable(self, sql: str, workload: str | None = None) -> str:
        """``sql`` as the encoder reads it: qualified by its workload's schema when the schemas are known."""
        from retriever.apps.sql.apply import workload_of
        from retriever.encoders.sql.structure import qualified_sql

        if not self.schemas:
            return sql
        if workload is None:
            try:
                workload = workload_of(sql, self.schemas)
            except RetrieverError:
                return sql
        return qualified_sql(sql, self.schemas.get(workload))

    def search(self, queries: Sequence[str], k: int, *, exclude_templates: Sequence[set[str]] | None = None,
               one_per_template: bool = True) -> list[list[Demonstration]]:
        """The ``k`` nearest pool queries of each query, best first, **one per template** (unless
        ``one_per_template`` is False); ``exclude_templates[i]`` drops templates for query i.

        A pool holds several parameter draws of each template, which read (and embed) almost alike and were helped
        alike: without the one-per-template rule they fill the ``k`` slots with one example told ``k`` times.
        """
        if k < 1:
            raise RetrieverError(f"-k must be >= 1 (got {k})")
        vectors = self.encoder.encode_queries([self.readable(q) for q in queries])  # (q, dim)
        scores, ids = self.index.search(vectors, len(self.records))  # (q, n) each: every pool query, best first
        out = []
        for i in range(len(queries)):
            skip = set(exclude_templates[i]) if exclude_templates else set()
            demos = []
            for score, idx in zip(scores[i], ids[i]):
                if idx < 0:
                    continue
                record = self.records[int(idx)]
                if record["template"] in skip:
                    continue
                if one_per_template:
                    skip.add(record["template"])
                demos.append(demonstration(record, float(score)))
                if len(demos) == k:
                    break
            out.append(demos)
        return out


def demo_retriever(records: Sequence[Mapping[str, Any]], model: str, *, preset: str = "sql", device: str = "auto",
                   schemas: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
                   demos_from: str = "helped") -> DemoRetriever:
    """A :class:`DemoRetriever` over ``records`` with encoder ``model`` loaded for ``preset`` on ``device``; the
    ``schemas`` qualify the SQL for the ``sql`` preset only (the ``text`` preset reads the raw query).

    Raises:
        RetrieverError: the model cannot be loaded, or as :class:`DemoRetriever`.
    """
    from retriever.encoders.base import load_encoder

    return DemoRetriever(records, load_encoder(model, preset=preset, device=device),
                         schemas=schemas if preset == "sql" else None, demos_from=demos_from)


def pool_retriever(pool: Path, model: str, *, device: str = "auto",
                   demos_from: str = "helped") -> tuple[DemoRetriever, dict[str, dict[str, Any]]]:
    """The demonstration retriever of a pool folder (``model`` read with the ``sql`` preset, the manifest's schemas)
    and the pool's records by id (what :func:`vote` reads).

    Raises:
        RetrieverError: not a pool, a record that is not JSON, or as :func:`demo_retriever`.
    """
    from retriever.apps.sql.records import read_manifest, read_pool

    records = read_pool(pool)
    retriever = demo_retriever(records, model, device=device, schemas=read_manifest(pool).get("schemas"),
                               demos_from=demos_from)
    return retriever, {r["id"]: r for r in records}


def demonstration(record: Mapping[str, Any], score: float = 0.0) -> Demonstration:
    """A pool record as a demonstration: the rules of its label (:func:`retriever.apps.sql.records.label_of`) and their
    measured speedup when they helped, else ``[]`` (keep the query)."""
    label = label_of(record)
    if label == "none":
        return Demonstration(record["id"], record["template"], record["sql"], [], None, score)
    speedup = math.exp(candidate_log_speedup(record, label))
    return Demonstration(record["id"], record["template"], record["sql"], label.split("+"), round(speedup, 4), score)


def vote(demos: Sequence[Demonstration], records_by_id: Mapping[str, Mapping[str, Any]],
         candidates: Sequence[Sequence[str]] = CANDIDATES) -> tuple[list[str], dict[str, float]]:
    """The rule set the demonstrations vote for, and every candidate's total (sum of the log speedups measured on
    the demonstrations, each counted only beyond the noise band: :func:`retriever.apps.sql.records.gated_log_speedup`).

    Returns ``([], totals)`` when no total is positive (keep the query as it is).
    """
    totals = {rule_key(c): sum(gated_log_speedup(records_by_id[d.id], rule_key(c)) for d in demos) for c in candidates}
    return voted_rules(totals), totals


def voted_rules(totals: Mapping[str, float]) -> list[str]:
    """The rule set with the highest vote total (the shorter key on a tie); ``[]`` when no total is positive."""
    best = max(totals, key=lambda key: (totals[key], -len(key)), default=None)
    if best is None or totals[best] <= 0:
        return []
    return best.split("+")


def planner_checked(sql: str, totals: Mapping[str, float], schema: Mapping[str, Mapping[str, str]],
                    cost: Callable[[str], float | None], *, ratio: float = PLANNER_RATIO) -> tuple[list[str], dict[str, float]]:
    """Let the database's planner pick among the rule sets the demonstrations voted for.

    ``totals`` are :func:`vote`'s; every rule set with a positive total is a candidate. Each candidate rewrite of
    ``sql`` is planned (``cost``: the planner's estimated total cost, e.g. :func:`retriever.apps.sql.postgres.planned_cost`
    on a connection, nothing executed); the cheapest is chosen when its estimate is at most ``ratio`` times the
    original's, else none (keep the query). A voted rewrite the planner expects to gain little is then not risked,
    and among several voted rule sets the planner's cost model, not the demonstrations' noise, decides.

    Returns the chosen rules (``[]`` = keep the query) and each candidate's estimated cost ratio (rewrite / original;
    candidates that fail to rewrite or to plan are left out).
    """
    candidates = [key for key, total in totals.items() if total > 0]
    original = cost(sql) if candidates else None
    if not original:
        return [], {}
    ratios: dict[str, float] = {}
    for key in candidates:
        try:
            text = apply_rules(sql, key.split("+"), schema)
        except RetrieverError:
            continue
        estimate = cost(text)
        if estimate is not None:
            ratios[key] = estimate / original
    best = min(ratios, key=lambda key: (ratios[key], -totals[key]), default=None)
    if best is None or ratios[best] > ratio:
        return [], ratios
    return best.split("+"), ratios


def voted_rewrites(sql: str, totals: Mapping[str, float], schema: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Each rule set with a positive vote total, as its rewrite of ``sql`` (``{rule key: SQL}``): rule sets that fail
    to rewrite the query or leave it unchanged are left out, and rule sets giving the same text keep the best-voted."""
    texts: dict[str, str] = {}
    for key in sorted((key for key, total in totals.items() if total > 0), key=lambda key: -totals[key]):
        try:
            text = apply_rules(sql, key.split("+"), schema)
        except RetrieverError:
            continue
        if not unchanged(sql, text) and text not in texts.values():
            texts[key] = text
    return texts


def timed_checked(rewrites: Mapping[str, str], measure: Callable[[Mapping[str, str]], Mapping[str, Any]], *,
                  speedup: float = TRIAL_SPEEDUP) -> tuple[list[str], dict[str, float]]:
    """Let a timed trial on the database pick among the voted rewrites (``rewrites``: :func:`voted_rewrites`).

    ``measure`` runs the original and every rewrite (e.g. :func:`retriever.apps.sql.apply.remeasure` on a connection)
    and returns ``{key: Remeasured}``; rewrites whose result differs from the original's come back ``wrong`` and are
    never chosen. The fastest rewrite is chosen when it measured at least ``speedup`` times faster, else none (keep
    the query). Unlike the planner's estimate, a trial sees every kind of win (a merged CTE, a better join order);
    its cost is one run of the original and each candidate per repeat, so the demonstrations' job is to keep the
    candidates few.

    Returns the chosen rules (``[]`` = keep the query) and each candidate's measured log speedup (``ok`` only).
    """
    if not rewrites:
        return [], {}
    measured = measure(rewrites)
    logs = {key: m.log_speedup for key, m in measured.items() if m.status == "ok"}
    best = max(logs, key=lambda key: logs[key], default=None)
    if best is None or logs[best] < math.log(speedup):
        return [], logs
    return best.split("+"), logs


def prompt(query: str, demos: Sequence[Demonstration]) -> str:
    """A prompt asking a language model for rewrite rules, with the demonstrations as worked examples."""
    from retriever.apps.sql.rules import CUSTOM_RULES, RULE_NAMES

    lines = ["You rewrite slow SQL queries for PostgreSQL by choosing rewrite rules (sqlglot optimizer rules, and "
             "inline_ctes: mark CTEs read more than once NOT MATERIALIZED).",
             f"Available rules: {', '.join((*RULE_NAMES, *CUSTOM_RULES))}.",
             "Here are queries like the one to rewrite, with the rules that made them faster (measured):", ""]
    for number, demo in enumerate(demos, start=1):
        effect = (f"speedup {demo.speedup:.2f}x" if demo.rules and demo.speedup else "no rule helped")
        lines += [f"Example {number} ({effect}):", "Query:", demo.sql.strip(),
                  "Rules: " + (", ".join(demo.rules) if demo.rules else "none"), ""]
    lines += ["Now the query to rewrite:", "Query:", query.strip(), "Rules:"]
    return "\n".join(lines)


def log_speedup(value: float | None) -> float:
    """``log(value)``; 0 for None."""
    return math.log(value) if value else 0.0
