"""Consistent cached teaching (kd.cache_views): the student is shown exactly the views the teacher labelled."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgekd.cli import main
from edgekd.pipeline import preprocess, stages
from edgekd.pipeline.config import load_config
from edgekd.pipeline.data import load_split
from edgekd.pipeline.rundir import RunDir
from edgekd.pipeline.train import EpochBatches, predict_logits
from edgekd.pipeline.views import chunk_path, chunks_of, draw_views, read_soft_labels
from tests.conftest import TINY_OVERRIDES


def _views_run(tiny_run, tmp_path, k: int = 3, mixup: float = 0.4):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    sets = TINY_OVERRIDES + [f"kd.cache_views={k}", f"train.mixup={mixup}", "gate.max_accuracy_drop=100"]
    args = ["run", "--data", load_split(RunDir(tiny_run)).source, "--out", str(out)]
    args += ["--stages", "data,teacher,soft_labels,student"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    cfg = load_config(out / "config.yaml")
    return RunDir(out), cfg


def test_replayed_view_reproduces_cached_teacher_logits(tiny_run, tmp_path):
    run, cfg = _views_run(tiny_run, tmp_path)
    data = load_split(run)
    n = len(data.subset("train"))
    logits, views = stages.soft_labels_for(cfg, run, data)
    assert views is not None and logits.shape == (n, 3, len(data.classes))
    assert (views.partner >= 0).all() and ((views.lam > 0) & (views.lam < 1)).all()  # mixup: every view mixed
    teacher = stages.load_teacher(cfg, run, len(data.classes))
    tdata = stages.train_data(run, data, cfg, None, views)
    # a training batch as the student gets it: pixels rendered from the stored view, logits from the cache
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    batches = EpochBatches(tdata, order, 8, n // 8, tuple(cfg.train.crop_scale), seed=5, mixup=cfg.train.mixup)
    seen_views = set()
    for s in range(len(batches)):
        b = batches[s]
        live = predict_logits(teacher, preprocess.normalize(b["x"], tdata.mean, tdata.std))
        assert torch.allclose(live, b["teacher"], atol=1e-4), (live - b["teacher"]).abs().max()
        # the hard-label target is mixed with the view's own partner and lam
        assert torch.allclose(b["target"].sum(1), torch.ones(len(b["y"])))
        for i, t in zip(b["idx"].tolist(), b["teacher"]):
            seen_views.add(int((views.logits[i] - t).abs().sum(1).argmin()))
    assert len(seen_views) > 1  # different epochs/steps draw different cached views


def test_views_are_drawn_per_image_not_per_chunk():
    a = draw_views(torch.arange(10), 10, 4, seed=0, mixup=0.5)
    b = draw_views(torch.tensor([3, 7]), 10, 4, seed=0, mixup=0.5)
    for key in a:
        assert torch.equal(a[key][[3, 7]], b[key]), key
    assert (a["partner"] != torch.arange(10).unsqueeze(1)).all()  # never mixed with itself
    c = draw_views(torch.arange(10), 10, 4, seed=1, mixup=0.5)
    assert not torch.equal(a["r"], c["r"])


def test_interrupted_soft_label_pass_resumes_from_complete_chunks(tiny_run, tmp_path, monkeypatch):
    run, cfg = _views_run(tiny_run, tmp_path, k=2, mixup=0.0)
    data = load_split(run)
    directory, _ = stages.soft_label_dir(cfg, run, data)
    monkeypatch.setattr("edgekd.pipeline.views.CHUNK", 5)
    n = len(data.subset("train"))
    plan = chunks_of(n)
    assert len(plan) > 2
    for f in directory.glob("chunk-*"):
        f.unlink()
    calls = []
    real = stages._label_chunk

    def flaky(teacher, cfg_, run_, data_, idx, device, bar=None):
        calls.append(int(idx[0]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(teacher, cfg_, run_, data_, idx, device, bar)

    monkeypatch.setattr(stages, "_label_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        stages.stage_soft_labels(cfg, run, data)
    assert chunk_path(directory, plan[0]).exists() and not chunk_path(directory, plan[1]).exists()
    calls.clear()
    monkeypatch.setattr(stages, "_label_chunk", real)
    counted = []
    monkeypatch.setattr(
        stages, "_label_chunk", lambda *a: counted.append(1) or real(*a)
    )  # the first chunk is not labelled again
    stages.stage_soft_labels(cfg, run, data)
    assert len(counted) == len(plan) - 1
    logits, views = read_soft_labels(directory, n)
    assert logits.shape[:2] == (n, 2) and views is not None
