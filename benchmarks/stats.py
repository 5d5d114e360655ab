"""Latency statistics. Pure Python + math so the worker can use it without importing numpy twice.

Percentiles use linear interpolation between closest ranks (numpy's default "linear" method,
also what MLPerf's loadgen reports to within one sample): p-th percentile of sorted x[0..n-1]
is x[h] interpolated at h = (n-1)*p/100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES = (50, 90, 95, 99)
LATENCY_KEYS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """p in [0, 100] of already sorted values (linear interpolation)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    h = (n - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo]))


def summarize(values: Iterable[float]) -> dict:
    """{mean, std (population), min, p50, p90, p95, p99, max} of a non-empty sample."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("summary of no values")
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / n
    out = {"mean": mean, "std": math.sqrt(var), "min": xs[0]}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(xs, p)
    out["max"] = xs[-1]
    return out


def rounded(summary: dict, digits: int = 4) -> dict:
    return {k: round(v, digits) for k, v in summary.items()}
