"""Consistent cached teaching (kd.cache_views): the student is shown exactly the views the teacher labelled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from edgekd.cli import main
from edgekd.pipeline import preprocess, stages
from edgekd.pipeline.config import load_config
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import RunDir, read_json
from edgekd.pipeline.train import EpochBatches, predict_logits
from edgekd.pipeline.views import chunk_path, chunks_of, draw_views, read_soft_labels, render
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


def test_teacher_at_its_own_size_labels_the_same_views_at_that_size(tiny_run, tmp_path):
    """teacher.image_size: the teacher is trained, labels its views and is evaluated at its own input size,
    while the student keeps data.image_size (32 here)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    sets = TINY_OVERRIDES + ["kd.cache_views=2", "teacher.image_size=48", "gate.max_accuracy_drop=100"]
    args = ["run", "--data", load_split(RunDir(tiny_run)).source, "--out", str(out)]
    args += ["--stages", "data,teacher,soft_labels,student,baseline,evaluate"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    run, cfg = RunDir(out), load_config(out / "config.yaml")
    data = load_split(run)
    assert read_json(run.teacher_meta)["image_size"] == 48
    teacher = stages.load_teacher(cfg, run, len(data.classes))
    logits, views = stages.soft_labels_for(cfg, run, data)
    big = stages.train_images(run, data, cfg, size=48)
    idx = torch.arange(4)
    px = render(
        big,
        idx,
        views.r[idx, 1],
        views.partner[idx, 1],
        views.r_partner[idx, 1],
        views.lam[idx, 1],
        48,
        tuple(cfg.train.crop_scale),
    )
    assert px.shape[-1] == 48
    live = predict_logits(teacher, preprocess.normalize(px, cfg.data.mean, cfg.data.std))
    assert torch.allclose(live, views.logits[idx, 1], atol=1e-4), (live - views.logits[idx, 1]).abs().max()
    # the student trains and is evaluated at its own size; the teacher's test logits come from 48 px inputs
    tdata = stages.train_data(run, data, cfg, None, views)
    assert tdata.image_size == 32 and tdata.val_x.shape[-1] == 32
    with np.load(run.path("eval", "logits.npz")) as z:
        saved = z["teacher"]
    x48 = stages.eval_tensor(run, data, cfg, "test", 48)
    assert np.allclose(saved, predict_logits(teacher, x48).numpy(), atol=1e-4)
    # the benchmark measures the teacher at its own size too (accuracy inputs and the ONNX export)
    from edgekd.benchmarks.subjects import collect_subjects, inputs_for

    bdir = run.path("bench")
    bdir.mkdir(exist_ok=True)
    subjects = {e["name"]: e for e in collect_subjects(cfg, run, len(data.classes), bdir)}
    for name in ("teacher-pytorch", "teacher-onnx"):
        assert subjects[name]["model_input"] == {"height": 48, "width": 48}, name
    assert subjects["student-pytorch"].get("model_input") in (None, {})
    x = np.load(inputs_for(run, cfg, data, 3, subjects["teacher-onnx"]["model_input"], {}, bdir))
    assert x.shape == (3, 3, 48, 48)


def test_teacher_size_needs_cached_mode():
    with pytest.raises(EdgekdError, match="teacher.image_size"):
        load_config(None, preset="quick", overrides={"teacher": {"image_size": 224}, "kd": {"mode": "online"}})
