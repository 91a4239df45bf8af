"""Small statistics for the bench: percentiles and one summary shape used everywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: Iterable[float | None], digits: int = 3) -> dict[str, Any]:
    """n, min, p50, p90, p99, max and mean of the values (None where there are none)."""
    xs = [v for v in values if v is not None and not math.isnan(v)]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {"n": len(xs), "min": r(min(xs)) if xs else None, "p50": r(percentile(xs, 50)),
            "p90": r(percentile(xs, 90)), "p99": r(percentile(xs, 99)), "max": r(max(xs)) if xs else None,
            "mean": r(sum(xs) / len(xs)) if xs else None}


def median(values: Iterable[float | None]) -> float | None:
    return percentile(values, 50)


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b, None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)
