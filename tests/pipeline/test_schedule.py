"""Schedules sized by optimizer steps, early stopping, the time budget, logit adjustment and kd auto."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.pipeline.losses import kd_loss
from edgekd.pipeline.train import Schedule, TrainSpec, sampled_prior, should_stop


def _spec(**kw) -> TrainSpec:
    base = dict(name="t", out_dir=".", epochs=6, lr=1e-3, batch_size=64)
    base.update(kw)
    return TrainSpec(**base)


def test_min_steps_grows_epochs_for_small_data_only():
    # ELPV-sized: 1771 images at batch 64 = 27 steps an epoch; 6 epochs = 162 >= 160: unchanged
    big = Schedule.of(_spec(min_steps=160), 1771)
    assert (big.steps_per_epoch, big.epochs, big.total_steps) == (27, 6, 162)
    # 405 images = 6 steps an epoch: 160 steps need 27 epochs instead of 6 (36 steps)
    small = Schedule.of(_spec(min_steps=160), 405)
    assert small.steps_per_epoch == 6 and small.epochs == math.ceil(160 / 6) and small.total_steps >= 160
    assert Schedule.of(_spec(), 405).total_steps == 36  # without min_steps: the old, starved schedule


def test_head_only_phase_keeps_its_share():
    s = Schedule.of(_spec(epochs=2, head_epochs=1, min_steps=150), 405)
    assert s.epochs == 25 and s.head_epochs == round(25 / 2)
    assert Schedule.of(_spec(epochs=2, head_epochs=1), 1771).head_epochs == 1  # unchanged without growth
    assert Schedule.of(_spec(epochs=1, head_epochs=1, min_steps=50), 405).head_epochs == 9  # head only stays so


def _hist(accs, spe=10, secs=1.0):
    return [{"epoch": i + 1, "val_accuracy": a, "elapsed_seconds": secs * (i + 1)} for i, a in enumerate(accs)]


def test_patience_counts_steps_since_the_best_epoch_and_respects_min_steps():
    spec = _spec(patience_steps=30, min_steps=0)
    h = _hist([0.5, 0.6, 0.6, 0.6])
    best = {"epoch": 2, "acc": 0.6}
    assert should_stop(h[:3], best, spec, 10) is None  # 10 steps since the best
    assert should_stop(h, best, spec, 10) is None  # 20 steps
    assert "patience" in should_stop(h + _hist([0.5] * 5)[4:5], best, spec, 10)  # 30 steps
    assert should_stop(h + _hist([0.5] * 5)[4:5], best, _spec(patience_steps=30, min_steps=100), 10) is None


def test_time_budget_stops_and_says_so():
    spec = _spec(max_minutes=0.05)  # 3 seconds
    assert should_stop(_hist([0.1, 0.2], secs=1.0), {"epoch": 2}, spec, 10) is None
    assert "time budget" in should_stop(_hist([0.1, 0.2, 0.3], secs=1.0), {"epoch": 3}, spec, 10)


def test_sampled_prior_follows_the_sampler():
    labels = torch.tensor([0] * 90 + [1] * 10)
    uniform = sampled_prior(labels, torch.ones(100, dtype=torch.double), 2)
    assert uniform.tolist() == pytest.approx([0.9, 0.1])
    sqrt_w = (1.0 / torch.bincount(labels).double().sqrt())[labels]  # the 1/sqrt(count) sampler
    assert sampled_prior(labels, sqrt_w, 2).tolist() == pytest.approx([3 / 4, 1 / 4])


def test_logit_adjusted_hard_term_only():
    """ce_offset shifts the CE term's logits (Menon et al.) and leaves the KL term alone."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    off = torch.tensor([0.0, -1.0, -2.0])
    tp = F.softmax(t / 2, 1)
    got = kd_loss(s, tp, y, alpha=0.3, temperature=2.0, ce_offset=off)
    kl = F.kl_div(F.log_softmax(s / 2, 1), tp, reduction="batchmean")
    assert got.item() == pytest.approx((0.3 * 4 * kl + 0.7 * F.cross_entropy(s + off, y)).item(), rel=1e-6)
    assert got.item() != pytest.approx(kd_loss(s, tp, y, alpha=0.3, temperature=2.0).item(), rel=1e-3)


def test_kd_auto_chooses_on_validation_and_caches(tiny_run, tmp_path):
    """kd.alpha/temperature=auto trains each candidate briefly, records them, keeps the best on val; a rerun of
    the stage reuses the candidates' results instead of training them again."""
    import shutil

    from edgekd.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = [
        "distill",
        str(run),
        "--set",
        "kd.alpha=auto",
        "--set",
        "kd.temperature=auto",
        "--set",
        "kd.auto_candidates=[[0.9,4.0],[0.1,1.0]]",
    ]
    assert main(args) == 0
    meta = json.loads((run / "student" / "meta.json").read_text())
    cands = meta["kd"]["auto"]["candidates"]
    assert [(c["alpha"], c["temperature"]) for c in cands] == [(0.9, 4.0), (0.1, 1.0)]
    best = max(cands, key=lambda c: c["val_accuracy"])
    assert (meta["kd"]["alpha"], meta["kd"]["temperature"]) == (best["alpha"], best["temperature"])
    results = sorted((run / "student" / "auto").glob("*/result.json"))
    assert len(results) == 2
    stamps = [p.stat().st_mtime_ns for p in results]
    (run / "stages.json").write_text(
        json.dumps({k: v for k, v in json.loads((run / "stages.json").read_text()).items() if k != "student"})
    )  # force the student stage to run again
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps  # candidates reused, not retrained


def test_best_epoch_ties_go_to_the_lower_validation_loss():
    from edgekd.pipeline.train import improved

    best = {"acc": 1.0, "loss": 0.60, "epoch": 5}
    assert improved({"val_accuracy": 1.0, "val_loss": 0.10}, best)  # same accuracy, fits better
    assert not improved({"val_accuracy": 1.0, "val_loss": 0.70}, best)
    assert not improved({"val_accuracy": 0.75, "val_loss": 0.01}, best)  # accuracy still comes first
    assert improved({"val_accuracy": 0.5, "val_loss": 9.0}, {"acc": None, "epoch": -1})
