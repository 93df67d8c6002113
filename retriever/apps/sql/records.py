"""A pool's records read back: the measured effect of each candidate rule set, labels, and the pool's files.

A pool is a folder: ``pool.jsonl`` (one record per query, see :func:`retriever.apps.sql.pool.process_query`) and
``manifest.json`` (settings, schemas, counts); :mod:`retriever.apps.sql.pool` builds it. Only verified rewrites (they
ran to completion and returned the original's result) get a speedup and can be chosen or applied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from indexing.errors import RetrieverError
from indexing.formats.jsonl import load_jsonl
from retriever.apps.sql.rules import CANDIDATES, rule_key

POOL_FILE = "pool.jsonl"
MANIFEST_FILE = "manifest.json"
HELPFUL = 2.0
"""A rule set *helps* a query when its verified rewrite is at least this much faster (speedup >= 2): on a busy
2-core machine, medians of 3 runs of a rewrite that does nothing (a single-table query, only qualified) came out up
to ~2x faster than the original's, so smaller gains are not told apart from noise."""


def candidate_log_speedup(record: Mapping[str, Any], key: str) -> float:
    """The measured effect of applying rule set ``key`` to the record's query, as ``log(speedup)``.

    0 when the rules do not apply, fail, or change the result (the original is then kept); the measured
    (possibly negative) value for a verified rewrite; ``log(original / timeout)`` for a rewrite that timed out.
    """
    if key == "none":
        return 0.0
    index = record.get("candidates", {}).get(key)
    if index is None:
        return 0.0
    rewrite = record["rewrites"][index]
    if rewrite["verified"] or rewrite["status"] == "timeout":
        return math.log(rewrite["speedup"]) if rewrite["speedup"] else 0.0
    return 0.0


def gated_log_speedup(record: Mapping[str, Any], key: str) -> float:
    """:func:`candidate_log_speedup` with effects inside the noise band (between ``1/HELPFUL`` and ``HELPFUL``x)
    counted as 0: what a decision may rely on. A single measured 1.3x is as likely noise as a real gain here."""
    value = candidate_log_speedup(record, key)
    return value if abs(value) >= math.log(HELPFUL) else 0.0


def oracle_key(record: Mapping[str, Any]) -> str:
    """The candidate rule set that measured fastest on the record's query (``none`` when none beat the original)."""
    effects = {key: candidate_log_speedup(record, key) for key in record.get("candidates", {})}
    best = max(effects, key=lambda key: (effects[key], -len(key)), default=None)
    return best if best is not None and effects[best] > 0 else "none"


def oracle_log_speedup(record: Mapping[str, Any]) -> float:
    """The best any candidate achieved on the record's query (0 = keep the original)."""
    return candidate_log_speedup(record, oracle_key(record))


def is_helped(record: Mapping[str, Any]) -> bool:
    """Whether some verified rewrite made the record's query at least :data:`HELPFUL` times faster (its label is
    not ``none``)."""
    return label_of(record) != "none"


def label_of(record: Mapping[str, Any]) -> str:
    """The record's class for training and for its demonstration: ``none`` unless a verified rewrite helped
    (speedup >= HELPFUL). Among the helpful rule sets whose effect is within the noise band of the best one
    (which of them measured fastest is chance), the one with the most rules is the label, so that queries
    helped alike (e.g. decorrelation, which the whole pipeline does too) share a label rather than split on noise;
    ties go to the earlier candidate."""
    helpful = {key: value for key in record.get("candidates", {})
               if (value := candidate_log_speedup(record, key)) >= math.log(HELPFUL)}
    if not helpful:
        return "none"
    best = max(helpful.values())
    order = {rule_key(c): i for i, c in enumerate(CANDIDATES)}
    near = [key for key, value in helpful.items() if value >= best - math.log(HELPFUL)]
    return min(near, key=lambda key: (-len(key.split("+")), order.get(key, len(order)), key))


# --- files ------------------------------------------------------------------------------------------------
def read_pool(folder: Path) -> list[dict[str, Any]]:
    """The records of a pool folder (or of a ``pool.jsonl`` file given directly).

    Raises:
        RetrieverError: missing folder/file; CorpusError: a line that is not a JSON object (naming the line).
    """
    folder = Path(folder)
    path = folder / POOL_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise RetrieverError(f"{folder}: not a pool (no {POOL_FILE}); build one with `retriever sql build-pool`")
    return load_jsonl(path)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The pool's manifest, from its folder or next to a ``pool.jsonl`` given directly (an empty dict when there
    is none)."""
    folder = Path(folder)
    path = (folder if folder.is_dir() else folder.parent) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per workload: queries, queries that ran, verified rewrites, helped queries, wrong rewrites refused."""
    out: dict[str, Any] = {}
    for workload in sorted({r["workload"] for r in records}) + ["all"]:
        chosen = [r for r in records if workload in ("all", r["workload"])]
        out[workload] = {
            "queries": len(chosen),
            "templates": len({r["template"] for r in chosen}),
            "ran": sum(1 for r in chosen if r["original"]["status"] == "ok"),
            "verified_rewrites": sum(1 for r in chosen if r["verified"]),
            "helped": sum(1 for r in chosen if is_helped(r)),
            "rewrites_tried": sum(len(r["rewrites"]) for r in chosen),
            "refused_wrong_result": sum(1 for r in chosen for w in r["rewrites"] if w["status"] == "wrong"),
            "timed_out": sum(1 for r in chosen for w in r["rewrites"] if w["status"] == "timeout"),
        }
    return out
