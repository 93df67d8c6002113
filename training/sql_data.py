"""Contrastive pairs from a SQL demonstration pool (``retriever train sql``), scheduled easy to hard.

Every pool query that ran is an anchor, labelled by the rule set that helped it most (``none`` when no
verified rewrite reached :data:`retriever.apps.sql.pool.HELPFUL`). For an anchor:

- the *positive* is another query with the same label: early in training one of its own template group (another
  parameter draw, or another TPC-Havoc variant of the same TPC-H query: easy), later, with growing probability,
  one of a different group (hard: same helpful rules, different look);
- the *negatives* are queries with a different label: early drawn uniformly (easy), later, with growing
  probability, among the ``hard_pool`` queries that look most like the anchor (token-set Jaccard similarity of
  their structure text) but were not helped by the same rules.

In-batch keys with the anchor's label are positives, not negatives (the example's ``group`` is its label, see
:func:`training.losses.supervised_info_nce`).

The probability of the hard choice grows linearly from 0 to 1 over the first ``curriculum`` fraction of the
run (then stays 1). Texts are the preset's preprocessing (``sql-structure-v1``) of each query, so training
sees exactly what retrieval encodes. Example ``p`` depends only on ``(seed, p)`` (resumable; see
:mod:`training.data`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import RetrieverError
from retriever.apps.sql.workloads import template_group
from training.data import EpochOrder, Example, example_rng, tokenize_texts

log = logging.getLogger(__name__)

PREPROCESSOR = "sql-structure-v1"


def jaccard_matrix(texts: Sequence[str]) -> np.ndarray:
    """``(n, n)`` token-set Jaccard similarities of ``texts`` (lower-cased whitespace tokens)."""
    sets = [frozenset(t.lower().split()) for t in texts]
    n = len(sets)
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(i, n):
            union = len(sets[i] | sets[j])
            value = len(sets[i] & sets[j]) / union if union else 0.0
            out[i, j] = out[j, i] = value
    return out


class SqlPairData:
    """Curriculum pairs over pool records (see the module docstring).

    Args:
        records: pool records; those whose original did not run are skipped.
        tokenizer: the encoder's tokenizer. total_examples: examples the run will draw (steps x batch x accumulate),
            which sets the schedule. curriculum: fraction of the run over which hardness goes 0 -> 1.
        per_query: negatives per example. hard_pool: how many most-similar other-label queries are "hard".
        anchors, label_groups: see :class:`training.config.SqlConfig`.
        schemas: the pool manifest's ``{workload: schema}``; queries are read qualified by them, as retrieval
            reads them (:class:`retriever.apps.sql.demos.DemoRetriever`).
    Raises:
        RetrieverError: fewer than two labels, or no anchor with a positive.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], tokenizer: Any, *, total_examples: int, curriculum: float = 0.5,
                 per_query: int = 1, hard_pool: int = 5, max_tokens: int = 256, seed: int = 0,
                 schemas: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None, anchors: str = "all",
                 label_groups: bool = True):
        from retriever.encoders.presets import preprocessor_function
        from retriever.apps.sql.pool import label_of
        from retriever.encoders.sql.structure import qualified_sql

        every_query_anchors = anchors == "all"

        usable = [r for r in records if r.get("original", {}).get("status") == "ok"]
        self.labels = [label_of(r) for r in usable]
        if len(set(self.labels)) < 2:
            raise RetrieverError(f"the pool needs queries with at least two different labels to train on (got {set(self.labels) or 'none'})")
        prepare = preprocessor_function(PREPROCESSOR)
        schemas = schemas or {}
        self.texts = [prepare(qualified_sql(r["sql"], schemas.get(r["workload"]))) for r in usable]
        self.groups = [template_group(r["template"]) for r in usable]  # "near" = same template group
        self.ids = [r["id"] for r in usable]
        similarity = jaccard_matrix(self.texts)
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(self.labels):
            by_label[label].append(i)
        self.same_group: list[list[int]] = []
        self.other_group: list[list[int]] = []
        self.negatives: list[np.ndarray] = []
        anchors = []
        for i, label in enumerate(self.labels):
            same = [j for j in by_label[label] if j != i]
            near = [j for j in same if self.groups[j] == self.groups[i]]
            far = [j for j in same if self.groups[j] != self.groups[i]]
            others = np.array([j for j in range(len(usable)) if self.labels[j] != label], dtype=np.int64)
            others = others[np.argsort(-similarity[i, others], kind="stable")]  # most similar first
            self.same_group.append(near)
            self.other_group.append(far)
            self.negatives.append(others)
            if (every_query_anchors or label != "none") and same and len(others) >= per_query:
                anchors.append(i)
        if not anchors:
            raise RetrieverError("no pool query has another query helped by the same rules to pair with")
        self.anchors = anchors
        # A few labels cover the whole pool, so in-batch keys often share the anchor's label: with plain in-batch
        # InfoNCE they would be pushed away as negatives. The label is the example's group, so the trainer's
        # supervised contrastive loss counts every same-label key of the batch as a positive instead.
        self.label_ids = {label: i for i, label in enumerate(sorted(set(self.labels)))}
        self.label_groups = label_groups
        self.tokenizer = tokenizer
        self.negatives_per_example = per_query
        self.total = max(1, total_examples)
        self.curriculum = curriculum
        self.hard_pool = hard_pool
        self.max_tokens = max_tokens
        self.seed = seed
        self.order = EpochOrder(len(anchors), seed)

    def __len__(self) -> int:
        return len(self.anchors)

    def hardness(self, position: int) -> float:
        """Probability of the hard choice for example ``position`` (0 -> 1 over the curriculum, then 1)."""
        if self.curriculum <= 0:
            return 1.0
        return min(1.0, position / (self.curriculum * self.total))

    def pick(self, position: int) -> tuple[int, int, list[int]]:
        """Indexes (anchor, positive, negatives) of example ``position``."""
        rng = example_rng(self.seed, position)
        anchor = self.anchors[self.order(position)]
        hard = self.hardness(position)
        near, far = self.same_group[anchor], self.other_group[anchor]
        if far and (not near or rng.random() < hard):
            positive = far[int(rng.integers(len(far)))]
        else:
            positive = near[int(rng.integers(len(near)))]
        others = self.negatives[anchor]
        chosen: list[int] = []
        for _ in range(self.negatives_per_example):
            pool = others[: max(self.hard_pool, self.negatives_per_example)] if rng.random() < hard else others
            candidates = [int(j) for j in pool if int(j) not in chosen] or [int(j) for j in others if int(j) not in chosen]
            chosen.append(candidates[int(rng.integers(len(candidates)))])
        return anchor, positive, chosen

    def examples(self, start: int, count: int) -> list[Example]:
        picks = [self.pick(p) for p in range(start, start + count)]
        queries = [self.texts[a] for a, _, _ in picks]
        documents = []
        for _, positive, negatives in picks:
            documents.append(self.texts[positive])
            documents.extend(self.texts[j] for j in negatives)
        query_ids = tokenize_texts(self.tokenizer, queries, max_length=self.max_tokens)
        doc_ids = tokenize_texts(self.tokenizer, documents, max_length=self.max_tokens)
        width = 1 + self.negatives_per_example
        return [Example(query_ids[i], doc_ids[i * width], tuple(doc_ids[i * width + 1: (i + 1) * width]),
                        group=self.label_ids[self.labels[picks[i][0]]] if self.label_groups else None)
                for i in range(len(picks))]

    def describe(self) -> dict[str, Any]:
        return {"kind": "sql-curriculum", "queries": len(self.labels), "anchors": len(self.anchors),
                "labels": dict(Counter(self.labels).most_common()), "negatives_per_example": self.negatives_per_example,
                "curriculum": self.curriculum, "hard_pool": self.hard_pool}


def build_sql_data(config: Any, tokenizer: Any) -> SqlPairData:
    """The pairs of ``retriever train sql`` from ``config.data[0]`` (a pool folder or its ``pool.jsonl``)."""
    from retriever.apps.sql.pool import read_manifest, read_pool

    source = Path(config.data[0])
    records = read_pool(source)
    schemas = read_manifest(source).get("schemas")
    total = config.steps * config.batch_size * config.accumulate
    return SqlPairData(records, tokenizer, total_examples=total, curriculum=config.sql.curriculum,
                       per_query=config.sql.negatives, hard_pool=config.sql.hard_pool, max_tokens=config.max_tokens,
                       seed=config.seed, schemas=schemas, anchors=config.sql.anchors, label_groups=config.sql.label_groups)
