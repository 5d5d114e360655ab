"""Fidelity (Stanton et al. 2021): the evaluate stage measures each student's agreement with its teacher on the
images it was trained on, and its advice tells underfitting the teacher (train longer) from learning only the
training images (more diverse data)."""

from __future__ import annotations

import shutil

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.pipeline import stages
from edgekd.pipeline.data import decode_resized, load_split
from edgekd.pipeline.evaluate import FIDELITY_IMAGES, fidelity_advice, fidelity_sample
from edgekd.pipeline.preprocess import normalize
from edgekd.pipeline.rundir import RunDir, read_json


def test_fidelity_sample_is_evenly_spaced_and_capped():
    assert np.array_equal(fidelity_sample(7), np.arange(7))
    idx = fidelity_sample(10 * FIDELITY_IMAGES)
    assert len(idx) == FIDELITY_IMAGES and idx[0] == 0 and idx[-1] == 10 * FIDELITY_IMAGES - 1
    assert np.all(np.diff(idx) > 0)  # no repeats, in order
    assert len(fidelity_sample(0)) == 0


def test_fidelity_advice_tells_underfitting_from_missing_data():
    under = fidelity_advice(0.81, 0.80, epochs=30)
    assert len(under) == 1 and "underfits" in under[0] and "now 30" in under[0] and "81%" in under[0]
    data = fidelity_advice(0.99, 0.80)
    assert len(data) == 1 and "more diverse" in data[0] and "data.unlabeled" in data[0]
    assert fidelity_advice(0.97, 0.93) == []  # fits the teacher on train, and nearly as well on test


class Probe(nn.Module):
    """A fixed random classifier of pooled pixels: its predictions vary from image to image, so an agreement
    computed on mismatched images (or from one constant prediction) shows."""

    def __init__(self, seed: int, k: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3 * 4 * 4, k, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w


def test_evaluate_reports_agreement_on_training_images(tiny_run, tmp_path, monkeypatch):
    shutil.copytree(tiny_run, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    (run.root / "eval" / "logits.npz").unlink()  # evaluate runs again
    cfg, data = run.config(), load_split(run)
    k = len(data.classes)
    probes = {("teacher", 0): Probe(0, k)}
    probes.update(
        {
            (kind, i): Probe(1 + i + 10 * j, k)
            for j, kind in enumerate(("student", "baseline"))
            for i in range(cfg.train.seeds)
        }
    )
    monkeypatch.setattr(stages, "load_teacher", lambda cfg, run, k: probes["teacher", 0].eval())
    monkeypatch.setattr(
        stages, "load_student", lambda cfg, run, k, kind="student", seed_index=0: probes[kind, seed_index].eval()
    )
    metrics = stages.stage_evaluate(cfg, run, data)
    # independently: every model on the whole (tiny) training split as one tensor
    items = data.subset("train")
    x = normalize(decode_resized(items, cfg.data.image_size, desc=None), cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        teacher = probes["teacher", 0](x).argmax(1)
        wants = []
        for kind in ("student", "baseline"):
            for i, row in enumerate(metrics[kind]["per_seed"]):
                want = (probes[kind, i](x).argmax(1) == teacher).float().mean().item()
                assert abs(row["agreement_teacher_train"] - want) < 1e-6, (kind, i)
                wants.append(want)
            assert metrics[kind]["agreement_teacher_train"] == metrics[kind]["per_seed"][0]["agreement_teacher_train"]
            assert metrics[kind]["fidelity_images"] == len(items)
    assert any(0 < w < 1 for w in wants)  # the check can tell matched images from mismatched ones
    rep = read_json(run.report_json)
    assert rep["student"]["agreement_teacher_train"] == metrics["student"]["agreement_teacher_train"]
    # the advice carries the fidelity finding that the measured agreements call for
    rows = metrics["student"]["per_seed"]
    want = fidelity_advice(
        float(np.mean([r["agreement_teacher_train"] for r in rows])),
        float(np.mean([r["agreement_teacher"] for r in rows])),
        read_json(stages.student_seed_dir(run, "student") / "history.json")["epochs_planned"],
    )
    assert want and metrics["fidelity_advice"] == want and rep["fidelity_advice"] == want
    # a diagnosis, not a verdict on KD: it stays out of `advice`, which leads the headline
    assert not set(want) & set(metrics["advice"])
