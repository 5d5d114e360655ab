"""Fixtures for the export tests: a tiny run whose student is trained enough to have clear margins
(int8 parity is about the artifact vs PyTorch, but near-tied logits would make top-1 agreement a coin toss)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("EDGEKD_QUIET", "1")

SIZE = 32
CLASSES = ("red_stripes", "green_dots", "blue_plain")
RUN_OVERRIDES = [
    f"data.image_size={SIZE}",
    "data.val_fraction=0.1",
    "data.test_fraction=0.3",
    "teacher.arch=efficientnet_lite0",
    "teacher.head_epochs=1",
    "teacher.epochs=0",
    "train.epochs=1",
    "train.batch_size=16",
    "train.lr=0.004",
    "train.threads=1",
    "train.warmup_epochs=0",
    "teacher.min_steps=0",  # the epochs above are the schedule (finish_training converges the student)
    "train.min_steps=0",
    "kd.alpha=0.2",
    "gate.max_accuracy_drop=100",
    "export.calibration_images=32",
]


def make_rgb(label: int, i: int, size: int = 40) -> np.ndarray:
    """Colour + texture per class, with noise and jitter: easy to learn, not a constant image."""
    rng = np.random.default_rng(7919 * label + i)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size, 3), 90.0)
    off = rng.integers(0, 4)
    if label == 0:
        img[..., 0] += 110 * (((xx + off) // 3) % 2)
    elif label == 1:
        img[..., 1] += 110 * ((((xx + off) // 4) % 2) & (((yy + off) // 4) % 2))
    else:
        img[..., 2] += 90
    img += rng.normal(0, 18, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_rgb_folder(root: Path, per_class: int = 34) -> Path:
    for c, name in enumerate(CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_rgb(c, i)).save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def export_run(tmp_path_factory) -> Path:
    """data -> teacher -> soft labels -> student on generated RGB images (export needs no evaluate stage)."""
    from edgekd.cli import main

    data = write_rgb_folder(tmp_path_factory.mktemp("export_data"))
    out = tmp_path_factory.mktemp("export_run") / "run"
    args = ["run", "--data", str(data), "--out", str(out), "--stages", "data,teacher,soft_labels,student"]
    for o in RUN_OVERRIDES:
        args += ["--set", o]
    assert main(args) == 0
    finish_training(out)
    return out


def finish_training(run_dir: Path, steps: int = 40) -> None:
    """Train the run's student to convergence on its (tiny) training split, re-estimate its BatchNorm
    statistics and save it back as the run's student.

    The pipeline run above trains one short epoch to stay fast. torchvision's MobileNetV3 uses BN momentum
    0.01, so after a few steps the running statistics are still near their initial values and the
    eval-mode student outputs near-uniform logits; near-tied logits make top-1 agreement a coin toss for any
    int8 artifact. A converged student with clear margins is what parity tests need."""
    import torch
    import torch.nn.functional as F

    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.models import save_state_dict
    from edgekd.pipeline.rundir import RunDir, atomic_write_json, read_json, sha256_file
    from edgekd.pipeline.stages import eval_tensor, load_student

    run = RunDir(run_dir)
    cfg = run.config()
    data = load_split(run)
    model = load_student(cfg, run, len(data.classes))
    x = eval_tensor(run, data, cfg, "train").clone()
    y = torch.from_numpy(data.labels("train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on 2 shared cores were measured 40x slower per step
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        flip = torch.rand(len(x)) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(xb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    torch.set_num_threads(threads)
    weights = run.student_dir("student") / "model.safetensors"
    save_state_dict(model, weights, metadata={"arch": cfg.student.arch, "kind": "student"})
    meta_path = run.student_dir("student") / "meta.json"
    meta = read_json(meta_path)
    meta["sha256"] = sha256_file(weights)
    atomic_write_json(meta_path, meta)
