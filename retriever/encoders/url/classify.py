"""Label URLs by their nearest neighbours in an index: a kNN vote.

With ``weights="distance"`` (the default) neighbour ``i`` at cosine similarity ``s_i`` (inner product of
normalized vectors) votes for its label with weight ``1 / (1 - s_i + eps)`` (inverse distance, as
scikit-learn's ``weights="distance"``; an exact duplicate outweighs everything else). On an L2 index the score
is the negated distance, so the weight is ``1 / (-score + eps)``. With ``weights="uniform"`` every neighbour
has weight 1. Neighbours without the label field do not vote.

The label is the one with the largest total weight, unless a ``positive`` label and a ``threshold`` are given
(a detector's operating point, as a probability threshold on scikit-learn's ``predict_proba``): then the
positive label wins exactly when its share of the vote is at least ``threshold``, and otherwise the largest
other label does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from indexing.errors import RetrieverError

EPSILON = 1e-6
DEFAULT_LABEL_FIELD = "label"
Weights = Literal["distance", "uniform"]
WEIGHTS: tuple[str, ...] = ("distance", "uniform")


@dataclass(frozen=True)
class Neighbour:
    """One neighbour of a classified URL: its id, URL, label (None = unlabelled), similarity and vote weight."""

    id: str
    url: str
    label: str | None
    score: float
    weight: float


@dataclass(frozen=True)
class Verdict:
    """The vote for one URL.

    Attributes:
        label: the winning label (None when no neighbour has a label).
        confidence: the winning label's share of the total weight, in [0, 1].
        votes: total weight per label.
        neighbours: the k neighbours, best first.
    """

    url: str
    label: str | None
    confidence: float
    votes: dict[str, float] = field(default_factory=dict)
    neighbours: list[Neighbour] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vote_weights(scores: np.ndarray, metric: str, weights: Weights = "distance") -> np.ndarray:
    """Vote weights ``(k,)`` of neighbour scores ``(k,)`` (``ip``: cosine similarity; ``l2``: -distance):
    inverse distance, or all 1 for ``uniform``."""
    scores = np.asarray(scores, dtype=np.float64)
    if weights == "uniform":
        return np.ones_like(scores)
    distance = (1.0 - scores) if metric == "ip" else -scores
    return 1.0 / (np.clip(distance, 0.0, None) + EPSILON)


def weighted_vote(labels: Sequence[str | None], scores: np.ndarray, metric: str, *, weights: Weights = "distance",
                  positive: str | None = None, threshold: float | None = None) -> tuple[str | None, float, dict[str, float]]:
    """The winning label, its share of the vote, and the total weight per label.

    Without a threshold the label with the largest total weight wins (ties: the label of the nearest). With
    ``positive`` and ``threshold``, ``positive`` wins when its share is >= ``threshold``; otherwise the largest
    other label does (``positive`` only when no other label voted).
    """
    totals: dict[str, float] = {}
    for label, weight in zip(labels, vote_weights(scores, metric, weights)):
        if label is not None:
            totals[label] = totals.get(label, 0.0) + float(weight)
    if not totals:
        return None, 0.0, totals
    total = sum(totals.values())
    candidates = totals
    if positive is not None and threshold is not None:
        others = {label: weight for label, weight in totals.items() if label != positive}
        if not others or totals.get(positive, 0.0) / total >= threshold:
            return positive, totals.get(positive, 0.0) / total, totals
        candidates = others
    best = max(candidates.values())
    winner = next(label for label in labels if label is not None and candidates.get(label) == best)
    return winner, best / total, totals


def check_vote(k: int, weights: str, positive: str | None, threshold: float | None) -> None:
    """Refuse vote settings :func:`classify` cannot use.

    Raises:
        RetrieverError: ``k < 1``, unknown ``weights``, or a ``threshold`` outside (0, 1] or without ``positive``.
    """
    if k < 1:
        raise RetrieverError(f"-k must be >= 1 (got {k})")
    if weights not in WEIGHTS:
        raise RetrieverError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS)}")
    if threshold is not None and (positive is None or not 0.0 < threshold <= 1.0):
        raise RetrieverError(f"--threshold needs --positive LABEL and a value in (0, 1] (got {threshold})")


def classify(searcher: Any, urls: Sequence[str], *, k: int = 10, label_field: str = DEFAULT_LABEL_FIELD,
             batch_size: int = 64, weights: Weights = "distance", positive: str | None = None,
             threshold: float | None = None) -> list[Verdict]:
    """Classify ``urls`` with the labelled URLs of ``searcher``'s index (a :class:`retriever.search.searcher.Searcher`).

    ``weights``, ``positive`` and ``threshold`` are those of :func:`weighted_vote`.

    Raises:
        RetrieverError: ``k < 1``, a bad ``weights``/``threshold``, or no neighbour of any URL carries ``label_field``.
    """
    check_vote(k, weights, positive, threshold)
    metric = searcher.manifest.metric
    verdicts = []
    for url, hits in zip(urls, searcher.search(list(urls), k, batch_size=batch_size)):
        labels = [_label(hit.metadata, label_field) for hit in hits]
        scores = np.array([hit.score for hit in hits], dtype=np.float64)
        label, confidence, votes = weighted_vote(labels, scores, metric, weights=weights, positive=positive, threshold=threshold)
        vote = vote_weights(scores, metric, weights)
        neighbours = [Neighbour(h.id, h.text, lab, float(h.score), float(w)) for h, lab, w in zip(hits, labels, vote)]
        verdicts.append(Verdict(url, label, confidence, votes, neighbours))
    if verdicts and all(v.label is None for v in verdicts):
        raise RetrieverError(f"no neighbour has a {label_field!r} field: build the index from labelled URLs "
                             "(TSV/CSV/JSONL with a label column) or pass --label-field")
    return verdicts


def _label(metadata: dict[str, Any], field_name: str) -> str | None:
    value = metadata.get(field_name)
    return None if value is None or value == "" else str(value)
