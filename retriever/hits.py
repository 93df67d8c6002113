"""The result type of every search: one query's hits, best first."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Hits(NamedTuple):
    """One query's results, best first.

    Attributes:
        ids: document (or passage) ids, length ``k'`` <= k (fewer when the index holds fewer).
        scores: ``(k',)`` float32, higher is better, aligned with ``ids``.
    """

    ids: list[str]
    scores: np.ndarray
