"""Fixtures for the benchmark tests (helpers live in bench_fixtures.py)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import SIZE, export_onnx, make_fake_run, tiny_net, write_synthetic_run

os.environ.setdefault("EDGEKD_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """(a 2-layer conv net at 32 px as ONNX, a .npy of 10 normalised NCHW inputs)."""
    d = tmp_path_factory.mktemp("tiny-onnx")
    onnx = export_onnx(tiny_net(), d / "tiny.onnx")
    x = np.random.default_rng(0).normal(size=(10, 3, SIZE, SIZE)).astype(np.float32)
    np.save(d / "x.npy", x)
    return onnx, d / "x.npy"


@pytest.fixture(scope="session")
def tiny_torchscript(tiny_onnx) -> tuple[Path, Path, np.ndarray]:
    """(the same net as TorchScript, the inputs .npy, its reference logits)."""
    import torch

    _, x = tiny_onnx
    net = tiny_net()
    path = x.parent / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, SIZE, SIZE)), str(path))
    with torch.no_grad():
        ref = net(torch.from_numpy(np.load(x))).numpy()
    return path, x, ref


@pytest.fixture
def synthetic_run(tmp_path) -> Path:
    """A run directory with a hand-written report.json (bench sections included) and training histories."""
    return write_synthetic_run(tmp_path / "run")


@pytest.fixture(scope="session")
def fake_run_template(tmp_path_factory) -> Path:
    """A tiny real run (data, untrained teacher/student/baseline, evaluate, export manifest). Do not modify."""
    return make_fake_run(tmp_path_factory.mktemp("edgekd-bench"))


@pytest.fixture
def fake_run(fake_run_template, tmp_path) -> Path:
    """A private copy of the tiny real run."""
    return Path(shutil.copytree(fake_run_template, tmp_path / "run"))
