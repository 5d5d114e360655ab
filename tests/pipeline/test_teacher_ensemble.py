"""teacher.ensemble / teacher.tta_flips: one teacher module that is the mean of its members over flips."""

from __future__ import annotations

import json
import shutil

import torch

from edgekd.cli import main
from edgekd.pipeline import stages
from edgekd.pipeline.config import load_config
from edgekd.pipeline.data import load_split
from edgekd.pipeline.models import TeacherEnsemble, build_teacher, load_state_dict_file
from edgekd.pipeline.rundir import RunDir
from tests.conftest import TINY_OVERRIDES


def _run(folder, out, extra):
    args = ["run", "--data", str(folder), "--out", str(out), "--stages", "data,teacher"]
    for s in TINY_OVERRIDES + extra:
        args += ["--set", s]
    assert main(args) == 0
    return RunDir(out), load_config(out / "config.yaml")


def test_ensemble_teacher_is_the_mean_of_its_members_over_flips(tiny_folder, tmp_path):
    ens = ["teacher.ensemble=[efficientnet_lite0,efficientnet_lite0]"]
    run, cfg = _run(tiny_folder, tmp_path / "run", ens + ["teacher.tta_flips=true"])
    meta = json.loads(run.teacher_meta.read_text())
    assert meta["arch"] == "ensemble:efficientnet_lite0+efficientnet_lite0|flips"
    assert len(meta["train"]["members"]) == 2
    data = load_split(run)
    k = len(data.classes)
    teacher = stages.load_teacher(cfg, run, k)
    assert isinstance(teacher, TeacherEnsemble)
    members = []
    for i in range(2):
        m, _ = build_teacher("efficientnet_lite0", None, k, cfg.data.image_size)
        m.load_state_dict(load_state_dict_file(run.path("teacher", "members", str(i), "model.safetensors")))
        members.append(m.eval())
    # members trained with different seeds are different models
    x = torch.randn(3, 3, cfg.data.image_size, cfg.data.image_size)
    with torch.no_grad():
        a, b = members[0](x), members[1](x)
        assert not torch.allclose(a, b, atol=1e-3)
        flips = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
        want = torch.stack([m(v) for m in members for v in flips]).mean(0)
        assert torch.allclose(teacher(x), want, atol=1e-5)

    # the flips are not part of a member's identity: turning them off retrains no member
    mtimes = [run.path("teacher", "members", str(i), "model.safetensors").stat().st_mtime_ns for i in range(2)]
    run2, cfg2 = _run(tiny_folder, run.root, ens + ["teacher.tta_flips=false"])
    assert [run2.path("teacher", "members", str(i), "model.safetensors").stat().st_mtime_ns for i in range(2)] == mtimes
    meta2 = json.loads(run2.teacher_meta.read_text())
    assert meta2["arch"] == "ensemble:efficientnet_lite0+efficientnet_lite0" and meta2["sha256"] != meta["sha256"]


def test_flip_averaged_single_teacher_bench_builder(tiny_run, tmp_path):
    """The benchmark rebuilds a torch teacher from (arch, weights file): an ensemble arch must load the same way."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    src = load_split(RunDir(tiny_run)).source
    run, cfg = _run(src, out, ["teacher.tta_flips=true"])
    meta = json.loads(run.teacher_meta.read_text())
    k = len(load_split(run).classes)
    model, _ = build_teacher(meta["arch"], str(run.teacher_weights), k, cfg.data.image_size)
    x = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), stages.load_teacher(cfg, run, k)(x), atol=1e-6)
        assert torch.allclose(model(x), model(x.flip(3)), atol=1e-4)  # flip-averaged: invariant to a flip
