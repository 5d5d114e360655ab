"""The KD verdict (pipeline/verdict.py) against hand-computable cases."""

import math

import numpy as np
import pytest

from edgekd.pipeline import verdict as v


def test_identical_predictions_give_a_zero_interval_and_p_one():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 2, size=(3, 50))
    assert v.paired_bootstrap_ci(s, s.copy(), n_boot=500) == (0.0, 0.0)
    assert v.mcnemar_p(s[0], s[0]) == 1.0
    r = v.kd_verdict(s, s.copy(), n_boot=500)
    assert r["kd_gain_mean"] == 0.0 and r["kd_gain_ci95"] == [0.0, 0.0] and r["mcnemar_p"] == 1.0
    assert r["conclusion"] == v.NO_DIFFERENCE and r["seeds"] == 3 and r["test_images"] == 50


def test_mcnemar_is_the_exact_two_sided_binomial_on_discordant_images():
    # 8 images the student alone gets right, 2 the baseline alone, 10 both right, 5 both wrong:
    # p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    s = np.array([1] * 8 + [0] * 2 + [1] * 10 + [0] * 5)
    b = np.array([0] * 8 + [1] * 2 + [1] * 10 + [0] * 5)
    assert v.mcnemar_p(s, b) == pytest.approx(2 * 56 / 1024)
    assert v.mcnemar_p(b, s) == pytest.approx(2 * 56 / 1024)  # two-sided: symmetric
    # the concordant images do not matter
    assert v.mcnemar_p(s[:10], b[:10]) == pytest.approx(2 * 56 / 1024)
    # balanced discordance: p = 1
    assert v.mcnemar_p([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(1.0)


def test_fallback_binomial_agrees_with_scipy(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *a, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_scipy)

    def p(only_student: int, only_baseline: int) -> float:  # discordant pairs only
        return v.mcnemar_p([1] * only_student + [0] * only_baseline, [0] * only_student + [1] * only_baseline)

    assert p(2, 8) == pytest.approx(2 * 56 / 1024)
    assert p(0, 12) == pytest.approx(2 / 4096)
    assert p(5, 5) == 1.0
    assert v.mcnemar_p([1, 0], [1, 0]) == 1.0


def test_a_student_right_on_every_discordant_image_wins():
    # 40 images: both right on 20, both wrong on 8, student alone right on 12 (12 points of 40 = +30 points)
    s = np.array([1] * 20 + [0] * 8 + [1] * 12)
    b = np.array([1] * 20 + [0] * 8 + [0] * 12)
    p = v.mcnemar_p(s, b)
    assert p == pytest.approx(2 * 0.5**12) and p < 0.001
    lo, hi = v.paired_bootstrap_ci(s, b, n_boot=2000)
    assert 0 < lo < 30 < hi <= 100
    r = v.kd_verdict(s, b, n_boot=2000)
    assert r["kd_gain_mean"] == 30.0 and r["conclusion"] == v.HELPED
    assert r["student_accuracy"] == [0.8] and r["baseline_accuracy"] == [0.5]
    # and the mirror image: KD hurt
    r = v.kd_verdict(b, s, n_boot=2000)
    assert r["kd_gain_mean"] == -30.0 and r["kd_gain_ci95"][1] < 0 and r["conclusion"] == v.HURT


def test_bootstrap_interval_matches_the_normal_approximation():
    # per-image gain d in {-1, 0, +1}: mean 0.1, the bootstrap sd of the mean is sd(d) / sqrt(n)
    n = 1000
    d = np.array([1] * 250 + [-1] * 150 + [0] * 600)
    s = (d == 1).astype(int)
    b = (d == -1).astype(int)
    lo, hi = v.paired_bootstrap_ci(s, b, n_boot=4000, seed=3)
    se = d.std() / math.sqrt(n) * 100
    assert (lo + hi) / 2 == pytest.approx(10.0, abs=0.3)
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.08)


def test_seeds_share_one_resample_and_average():
    # seed 0: student +10 points; seed 1: student -10 points -> mean 0; per image the gains cancel
    # exactly, so a shared resample gives a zero interval (independent resamples per seed would not)
    s0 = np.array([1] * 10 + [0] * 90)
    b0 = np.zeros(100, int)
    s1, b1 = b0.copy(), s0.copy()
    r = v.kd_verdict(np.stack([s0, s1]), np.stack([b0, b1]), n_boot=1000)
    assert r["kd_gain_per_seed"] == [10.0, -10.0] and r["kd_gain_mean"] == 0.0
    assert r["kd_gain_std"] == pytest.approx(math.sqrt(200), abs=0.01)  # sample std of (10, -10)
    assert r["kd_gain_ci95"] == [0.0, 0.0]
    assert len(r["mcnemar_p_per_seed"]) == 2 and r["mcnemar_p"] == r["mcnemar_p_per_seed"][0] < 0.01


def test_interval_is_reproducible_and_holds_the_mean():
    rng = np.random.default_rng(7)
    s = rng.random((3, 200)) < 0.7
    b = rng.random((3, 200)) < 0.6
    r1, r2 = v.kd_verdict(s, b, n_boot=1000, seed=5), v.kd_verdict(s, b, n_boot=1000, seed=5)
    assert r1 == r2
    lo, hi = r1["kd_gain_ci95"]
    assert lo <= r1["kd_gain_mean"] <= hi and lo < hi


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        v.kd_verdict(np.ones((2, 5)), np.ones((1, 5)))
    with pytest.raises(ValueError, match="no test images"):
        v.paired_bootstrap_ci(np.ones((1, 0)), np.ones((1, 0)))


def test_collapse_gate_fails_a_majority_class_predictor_and_passes_a_learner():
    """A model that answers the commonest class scores its share (60% here) and still fails; one 10 points
    above passes. Chance is the floor on balanced data."""
    from edgekd.pipeline.evaluate import classification_metrics, collapse_gate, majority_share

    y = np.array([0] * 60 + [1] * 25 + [2] * 15)
    assert majority_share(y, 3) == pytest.approx(0.6)
    always0 = np.tile([5.0, 0.0, 0.0], (100, 1))
    g = collapse_gate("student", classification_metrics(always0, y, ["a", "b", "c"]), y, 3, 2.0)
    assert not g["passed"] and g["classes_predicted"] == 1 and "collapsed" in g["message"]
    good = np.eye(3)[np.where(np.arange(100) < 70, y, (y + 1) % 3)] * 5  # 70% right
    g = collapse_gate("student", classification_metrics(good, y, ["a", "b", "c"]), y, 3, 2.0)
    assert g["passed"] and g["value_points"] == pytest.approx(10.0)
    yb = np.arange(100) % 4  # balanced: the floor is chance, 25%
    g = collapse_gate("student", classification_metrics(np.eye(4)[yb] * 5, yb, list("abcd")), yb, 4, 2.0)
    assert g["floor"] == pytest.approx(0.25) and g["passed"]


def test_advice_names_a_teacher_that_cannot_help_and_a_worse_kd_student():
    from edgekd.pipeline.evaluate import kd_advice

    weak = kd_advice({"accuracy": 0.80}, {"accuracy": 0.85}, {"accuracy": 0.90}, student_val=0.7, baseline_val=0.8)
    assert len(weak) == 2 and "cannot help" in weak[0] and "validation" in weak[1]
    assert kd_advice({"accuracy": 0.95}, {"accuracy": 0.91}, {"accuracy": 0.90}, 0.9, 0.88) == []
