"""Settings of the data a run reads besides its training data: an index to mine hard negatives from (with an
optional hybrid teacher) and a BEIR folder to select the best step on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from indexing.errors import RetrieverError


def parse_weights(text: str | None, flag: str) -> tuple[float, ...]:
    """``"0.3,0.3,0.4"`` -> ``(0.3, 0.3, 0.4)``; None or empty -> ``()``. Raises RetrieverError naming ``flag``."""
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise RetrieverError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.3,0.3,0.4") from None


@dataclass(frozen=True)
class NegativesConfig:
    """Hard negatives mined from an index (supervised pairs and sentence anchors).

    Attributes:
        index: an index directory built by ``retriever index build``; None = no mining.
        rank_min, rank_max: negatives are sampled among the hits ranked ``rank_min..rank_max`` (1-based,
            inclusive), known positives skipped.
        per_query: hard negatives per training pair (0 = in-batch negatives only).
        teacher: ``none`` (negatives ranked by the index's dense encoder, all equally negative) or ``hybrid``
            (ranked by BM25 + dense score fusion, :mod:`retriever.search.hybrid`; its fused scores of the positive and
            the sampled negatives become soft labels, distilled with a listwise KL loss).
        distill_weight: weight of that KL term next to the in-batch InfoNCE (``teacher`` hybrid only).
        teacher_temperature: the teacher's fused scores (min-max normalised, in [0, 1]) are divided by this
            before the softmax.
        teacher_indexes: more dense indexes of the same corpus (built with other models) whose scores join the
            hybrid teacher's fusion (``teacher`` hybrid only).
        teacher_weights: with ``teacher_indexes``, the fusion weights: the index's dense scores, then each of
            ``teacher_indexes``, then BM25 (each list min-max normalised; see
            :func:`retriever.search.fusion.weighted_score_fusion`). Empty: the hybrid's default alpha, which needs no
            ``teacher_indexes``.
    """

    index: str | None = None
    rank_min: int = 10
    rank_max: int = 50
    per_query: int = 1
    teacher: Literal["none", "hybrid"] = "none"
    distill_weight: float = 1.0
    teacher_temperature: float = 0.05
    teacher_indexes: tuple[str, ...] = ()
    teacher_weights: tuple[float, ...] = ()

    def validate(self) -> None:
        if not 1 <= self.rank_min <= self.rank_max:
            raise RetrieverError(f"negative ranks must satisfy 1 <= min <= max (got {self.rank_min}:{self.rank_max})")
        if self.per_query < 0:
            raise RetrieverError(f"--negatives-per-query must be >= 0 (got {self.per_query})")
        if self.teacher not in ("none", "hybrid"):
            raise RetrieverError(f"--teacher must be 'none' or 'hybrid' (got {self.teacher!r})")
        if self.teacher == "hybrid" and (self.index is None or self.per_query < 1):
            raise RetrieverError("--teacher hybrid needs --negatives-from INDEX and --negatives-per-query >= 1")
        if self.distill_weight < 0 or self.teacher_temperature <= 0:
            raise RetrieverError("--distill-weight must be >= 0 and --teacher-temperature > 0")
        if (self.teacher_indexes or self.teacher_weights) and self.teacher != "hybrid":
            raise RetrieverError("--teacher-index and --teacher-weights need --teacher hybrid")
        if self.teacher_indexes and len(self.teacher_weights) != len(self.teacher_indexes) + 2:
            raise RetrieverError(
                f"--teacher-weights needs {len(self.teacher_indexes) + 2} weights with {len(self.teacher_indexes)} "
                f"--teacher-index (the index's dense scores, each teacher index, BM25); got {len(self.teacher_weights)}")
        if self.teacher_weights and not self.teacher_indexes:
            raise RetrieverError("--teacher-weights goes with --teacher-index (without it, the hybrid's alpha applies)")
        if any(not (w >= 0.0 and w != float("inf")) for w in self.teacher_weights) or (
                self.teacher_weights and sum(self.teacher_weights) <= 0.0):
            raise RetrieverError(f"--teacher-weights must be >= 0, finite, and not all 0 (got {list(self.teacher_weights)})")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on a BEIR folder with exact in-memory search; the best step becomes the output model.

    Attributes:
        dataset: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); None = no evaluation.
        split: the qrels split to select on. Use ``train`` (or a dev split): selecting on test leaks.
        every: evaluate every this many optimizer steps (and at step 0 and at the end); 0 = start and end only.
        metric: the ir_measures metric that picks the best step.
        batch_size: encoding batch size.
    """

    dataset: str | None = None
    split: str = "train"
    every: int = 0
    metric: str = "nDCG@10"
    batch_size: int = 64

    def validate(self) -> None:
        if self.every < 0:
            raise RetrieverError(f"--eval-every must be >= 0 (got {self.every})")
