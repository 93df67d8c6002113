"""Label URLs by their nearest neighbours in an index: a distance-weighted kNN vote.

Neighbour ``i`` at cosine similarity ``s_i`` (inner product of normalized vectors) votes for its label with
weight ``1 / (1 - s_i + eps)`` (inverse distance, as scikit-learn's ``weights="distance"``; an exact
duplicate outweighs everything else). On an L2 index the score is the negated distance, so the weight is
``1 / (-score + eps)``. The label is the one with the largest total weight; neighbours without the label
field do not vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from indexing.errors import RetrieverError

EPSILON = 1e-6
DEFAULT_LABEL_FIELD = "label"


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


def vote_weights(scores: np.ndarray, metric: str) -> np.ndarray:
    """Inverse-distance weights ``(k,)`` of neighbour scores ``(k,)`` (``ip``: cosine similarity; ``l2``: -distance)."""
    scores = np.asarray(scores, dtype=np.float64)
    distance = (1.0 - scores) if metric == "ip" else -scores
    return 1.0 / (np.clip(distance, 0.0, None) + EPSILON)


def weighted_vote(labels: Sequence[str | None], scores: np.ndarray, metric: str) -> tuple[str | None, float, dict[str, float]]:
    """The label with the largest total weight, its share, and the totals (ties: the label of the nearest)."""
    weights = vote_weights(scores, metric)
    votes: dict[str, float] = {}
    for label, weight in zip(labels, weights):
        if label is not None:
            votes[label] = votes.get(label, 0.0) + float(weight)
    if not votes:
        return None, 0.0, votes
    best = max(votes.values())
    winner = next(label for label in labels if label is not None and votes[label] == best)
    return winner, best / sum(votes.values()), votes


def classify(searcher: Any, urls: Sequence[str], *, k: int = 10, label_field: str = DEFAULT_LABEL_FIELD,
             batch_size: int = 64) -> list[Verdict]:
    """Classify ``urls`` with the labelled URLs of ``searcher``'s index (a :class:`retriever.searcher.Searcher`).

    Raises:
        RetrieverError: ``k < 1``, or no neighbour of any URL carries ``label_field``.
    """
    if k < 1:
        raise RetrieverError(f"-k must be >= 1 (got {k})")
    metric = searcher.manifest.metric
    verdicts = []
    for url, hits in zip(urls, searcher.search(list(urls), k, batch_size=batch_size)):
        labels = [_label(hit.metadata, label_field) for hit in hits]
        scores = np.array([hit.score for hit in hits], dtype=np.float64)
        label, confidence, votes = weighted_vote(labels, scores, metric)
        weights = vote_weights(scores, metric)
        neighbours = [Neighbour(h.id, h.text, lab, float(h.score), float(w)) for h, lab, w in zip(hits, labels, weights)]
        verdicts.append(Verdict(url, label, confidence, votes, neighbours))
    if verdicts and all(v.label is None for v in verdicts):
        raise RetrieverError(f"no neighbour has a {label_field!r} field: build the index from labelled URLs "
                             "(TSV/CSV/JSONL with a label column) or pass --label-field")
    return verdicts


def _label(metadata: dict[str, Any], field_name: str) -> str | None:
    value = metadata.get(field_name)
    return None if value is None or value == "" else str(value)
