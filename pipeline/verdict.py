"""Did distillation help? A paired verdict on the test predictions of KD students and hard-label baselines.

    kd_verdict(student_correct, baseline_correct) -> {seeds, kd_gain_mean, kd_gain_std, kd_gain_ci95, mcnemar_p, ...}

Inputs are 0/1 arrays [seeds, test images]: row i says which test images the student (baseline) of seed i got
right. Student and baseline of one seed start from the same weights and see the same teacher and soft labels,
so they are paired per seed and per image:

- the gain is the mean over seeds of (student accuracy - baseline accuracy), in points;
- its 95% interval is a paired percentile bootstrap over test images: images are drawn with replacement, the
  same draw for every seed and for both models, and the gain is recomputed on each draw. It measures how much
  the gain could move on another test set of this size; with N seeds the gain is already an average over N
  trainings (kd_gain_std is their spread), but the interval does not widen for the seed-to-seed variance;
- McNemar's exact test (two-sided binomial on the discordant images) asks, for one seed, whether the student
  and the baseline err on different images more one way than the other.

The conclusion follows the interval: above 0 "KD helped", below 0 "KD hurt", else "no significant difference".
"""

from __future__ import annotations

import math

import numpy as np

HELPED, HURT, NO_DIFFERENCE = "KD helped", "KD hurt", "no significant difference"


def _as_2d(a) -> np.ndarray:
    x = np.asarray(a)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected [seeds, images] of 0/1, got shape {x.shape}")
    return x.astype(np.float64)


def _pair(student_correct, baseline_correct) -> tuple[np.ndarray, np.ndarray]:
    s, b = _as_2d(student_correct), _as_2d(baseline_correct)
    if s.shape != b.shape:
        raise ValueError(f"student {s.shape} and baseline {b.shape} predictions differ in shape")
    if not s.shape[1]:
        raise ValueError("no test images")
    return s, b


def paired_bootstrap_ci(
    student_correct, baseline_correct, n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval (points) of mean-over-seeds(student acc - baseline acc), resampling test images
    with replacement (one draw shared by all seeds and both models)."""
    s, b = _pair(student_correct, baseline_correct)
    d = (s - b).mean(0)  # per image: the gain averaged over seeds; a shared draw makes the statistic its mean
    n = len(d)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bounded memory for large test sets
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        stats[start : start + m] = d[rng.integers(0, n, size=(m, n))].mean(1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail]) * 100
    return float(lo), float(hi)


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of k successes in n trials at p=1/2 (symmetric: twice the smaller tail)."""
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest

        return float(binomtest(k, n, 0.5).pvalue)
    except ImportError:
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
        return float(min(1.0, 2 * tail))


def mcnemar_p(student_correct, baseline_correct) -> float:
    """Exact McNemar test of one seed: two-sided binomial test on the discordant images
    (student right & baseline wrong vs student wrong & baseline right) at p=1/2. 1.0 with no discordant image."""
    s = np.asarray(student_correct).astype(bool).ravel()
    b = np.asarray(baseline_correct).astype(bool).ravel()
    if s.shape != b.shape:
        raise ValueError(f"student {s.shape} and baseline {b.shape} predictions differ in shape")
    only_s = int(np.count_nonzero(s & ~b))
    only_b = int(np.count_nonzero(~s & b))
    return _binom_two_sided(only_s, only_s + only_b)


def conclusion(ci95: tuple[float, float]) -> str:
    lo, hi = ci95
    if lo > 0:
        return HELPED
    if hi < 0:
        return HURT
    return NO_DIFFERENCE


def kd_verdict(student_correct, baseline_correct, n_boot: int = 10000, seed: int = 0) -> dict:
    """The verdict for report.json: gains in points, accuracies 0..1 per seed, p-values, the conclusion."""
    s, b = _pair(student_correct, baseline_correct)
    sa, ba = s.mean(1), b.mean(1)
    gains = (sa - ba) * 100
    lo, hi = (round(v, 2) for v in paired_bootstrap_ci(s, b, n_boot=n_boot, seed=seed))
    ps = [mcnemar_p(s[i], b[i]) for i in range(len(s))]
    return {
        "seeds": int(len(s)),
        "test_images": int(s.shape[1]),
        "kd_gain_mean": round(float(gains.mean()), 2),
        "kd_gain_std": round(float(gains.std(ddof=1)) if len(gains) > 1 else 0.0, 2),
        "kd_gain_ci95": [lo, hi],
        "kd_gain_per_seed": [round(float(g), 2) for g in gains],
        "mcnemar_p": round(ps[0], 6),
        "mcnemar_p_per_seed": [round(p, 6) for p in ps],
        "student_accuracy": [round(float(a), 6) for a in sa],
        "baseline_accuracy": [round(float(a), 6) for a in ba],
        "bootstrap": {"resamples": n_boot, "seed": seed, "method": "paired percentile bootstrap over test images"},
        "conclusion": conclusion((lo, hi)),
    }
