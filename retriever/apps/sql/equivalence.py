"""Do two queries return the same result? Rows compared as multisets, in order when the query sorts.

Numbers compare with a tolerance (rewrites may reorder floating-point sums); a result that cannot be shown
equal is treated as different, so doubt always refuses a rewrite.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

REL_TOL = 1e-6
ABS_TOL = 1e-6


def has_order_by(sql: str) -> bool:
    """True when the outermost query sorts its rows (then row order is part of the result)."""
    import sqlglot

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # noqa: BLE001 - unparsable: treat as ordered (the stricter comparison)
        return True
    return tree.args.get("order") is not None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return None


def _sort_key(row: Sequence[Any]) -> tuple:
    key = []
    for value in row:
        number = _number(value)
        if value is None:
            key.append((0, ""))
        elif number is not None:
            key.append((1, round(number, 4) if math.isfinite(number) else number))
        elif isinstance(value, (_dt.date, _dt.datetime, _dt.time, _dt.timedelta)):
            key.append((2, str(value)))
        else:
            key.append((3, str(value)))
    return tuple(key)


def values_equal(a: Any, b: Any) -> bool:
    """Equal values; numbers within :data:`REL_TOL`/:data:`ABS_TOL`, strings with trailing blanks ignored (CHAR)."""
    if a is None or b is None:
        return a is None and b is None
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return math.isclose(na, nb, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, str) and isinstance(b, str):
        return a.rstrip() == b.rstrip()
    return a == b


def rows_equal(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]]) -> bool:
    """Same rows in the same order (same width, values by :func:`values_equal`)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb) or not all(values_equal(x, y) for x, y in zip(ra, rb)):
            return False
    return True


def same_result(original: Sequence[Sequence[Any]], rewrite: Sequence[Sequence[Any]], *, ordered: bool) -> bool:
    """True when ``rewrite`` returned what ``original`` did: as sequences when ``ordered``, else as multisets.

    Multisets are compared by sorting both sides on a rounded key and then comparing row by row with the
    tolerance; a mismatch anywhere (even one caused by rounding at a boundary) answers False.
    """
    if ordered:
        return rows_equal(original, rewrite)
    if len(original) != len(rewrite):
        return False
    return rows_equal(sorted(original, key=_sort_key), sorted(rewrite, key=_sort_key))
