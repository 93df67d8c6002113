"""Exact merge of per-shard top-k lists into one top-k (each document lives in exactly one shard).

Each shard answers its own top-k (filters applied inside the shard before its top-k), best first. The set's
top-k is among the union of those lists, since a document in the set's top-k is in its shard's top-k; a
k-way merge of the sorted lists by score gives it exactly. Ties keep shard order, then rank.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import islice

import numpy as np

from retriever.hits import Hit, Hits


def _score(hit: Hit) -> float:
    return -hit.score


def merge_hits(per_shard: Sequence[Sequence[Sequence[Hit]]], k: int) -> list[list[Hit]]:
    """``per_shard[s][q]``: shard s's hits for query q, best first -> per query the best ``k`` over all shards.

    Raises:
        ValueError: shards answered different numbers of queries.
    """
    if not per_shard:
        return []
    queries = {len(lists) for lists in per_shard}
    if len(queries) != 1:
        raise ValueError(f"shards answered different numbers of queries: {sorted(queries)}")
    return [list(islice(heapq.merge(*(lists[q] for lists in per_shard), key=_score), k))
            for q in range(queries.pop())]


def merge_ranked(per_shard: Sequence[Sequence[Hits]], k: int) -> list[Hits]:
    """:func:`merge_hits` for id/score lists (:class:`Hits`, scores descending)."""
    if not per_shard:
        return []
    out = []
    for q in range(len(per_shard[0])):
        pairs = heapq.merge(*(zip(lists[q].ids, lists[q].scores.tolist()) for lists in per_shard), key=lambda p: -p[1])
        best = list(islice(pairs, k))
        out.append(Hits([d for d, _ in best], np.asarray([s for _, s in best], dtype=np.float32)))
    return out
