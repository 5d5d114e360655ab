"""A teacher from any framework, as ONNX: run with onnxruntime for its logits."""

import json
import shutil

import pytest
import torch

from edgekd.cli import main
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import RunDir
from edgekd.pipeline.stages import load_teacher


def test_onnx_teacher_gives_the_same_soft_labels(tiny_run, tmp_path):
    run = RunDir(tiny_run)
    cfg = run.config()
    k = len(load_split(run).classes)
    teacher = load_teacher(cfg, run, k)
    onnx_path = tmp_path / "teacher.onnx"
    x = torch.randn(2, 3, 32, 32)
    torch.onnx.export(
        teacher,
        x,
        str(onnx_path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    assert main(["distill", str(out), "--set", f"teacher.onnx={onnx_path}"]) == 2  # teacher stage not rerun yet
    assert main(["teacher", str(out), "--set", f"teacher.onnx={onnx_path}"]) == 0
    meta = json.loads((out / "teacher" / "meta.json").read_text())
    assert meta["kind"] == "onnx" and meta["arch"] == "onnx:teacher.onnx"
    assert main(["distill", str(out), "--set", "train.epochs=1"]) == 0

    from edgekd.pipeline.stages import read_soft_labels

    n = len(load_split(run).subset("train"))
    # (logits, views): with cached views (the default preset) the logits are N x K views x C
    torch_labels, _ = read_soft_labels(next((tiny_run / "soft_labels").iterdir()), n)
    onnx_dirs = [
        d for d in (out / "soft_labels").iterdir() if d.name != next((tiny_run / "soft_labels").iterdir()).name
    ]
    assert len(onnx_dirs) == 1  # new cache key: the teacher changed
    onnx_labels, _ = read_soft_labels(onnx_dirs[0], n)
    assert torch_labels.shape == onnx_labels.shape and torch_labels.shape[0] == n
    assert torch.allclose(torch_labels, onnx_labels, atol=1e-3)


def test_onnx_teacher_with_wrong_class_count_is_refused(tiny_run, tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 7))
    p = tmp_path / "t7.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(p), dynamo=False)
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    assert main(["teacher", str(out), "--set", f"teacher.onnx={p}"]) == 2
    with pytest.raises(EdgekdError, match="outputs 7 classes but the data has 4"):
        from edgekd.pipeline.stages import stage_teacher

        cfg = RunDir(out).config()
        cfg.teacher.onnx = str(p)
        stage_teacher(cfg, RunDir(out), load_split(RunDir(out)))
