import math

import numpy as np
import pytest

from edgekd.benchmarks.stats import LATENCY_KEYS, percentile, summarize


def test_percentiles_of_1_to_100():
    xs = list(range(1, 101))
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 90) == pytest.approx(90.1)
    assert percentile(xs, 95) == pytest.approx(95.05)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 100


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000])
def test_percentiles_match_numpy_linear(n):
    xs = sorted(np.random.default_rng(n).lognormal(0, 1, n).tolist())
    for p in (0, 1, 50, 90, 95, 99, 99.9, 100):
        assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)), rel=1e-12)


def test_summary_known_values():
    s = summarize([4.0, 1.0, 3.0, 2.0])  # unsorted input
    assert tuple(s) == LATENCY_KEYS
    assert s["mean"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["p50"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert s["p99"] == pytest.approx(3.97)


def test_single_value_and_errors():
    s = summarize([7.0])
    assert all(s[k] == 7.0 for k in LATENCY_KEYS if k != "std") and s["std"] == 0
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)
