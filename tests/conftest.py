"""Shared fixtures: tiny generated image folders and a tiny trained run (no network, CPU seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("EDGEKD_QUIET", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see edgekd/cli.py)

TINY_OVERRIDES = [
    "data.image_size=32",
    "teacher.arch=efficientnet_lite0",
    "teacher.head_epochs=1",
    "teacher.epochs=1",
    "train.epochs=2",
    "train.batch_size=16",
    "train.threads=2",
    "data.val_fraction=0.15",
    "kd.temperature=2.0",
    # a smoke run, not a model: the epochs above are the schedule (the presets' min_steps would make it 800
    # steps), and 4 optimizer steps do not beat chance on 12 test images, so the collapse gate is off
    "teacher.min_steps=0",
    "train.min_steps=0",
    "gate.min_margin_over_majority=null",
]


def make_image(label: int, i: int, size: int = 40) -> np.ndarray:
    """Class-dependent pattern (stripe orientation and brightness) plus noise: learnable, not trivial."""
    rng = np.random.default_rng(1000 * label + i)
    yy, xx = np.mgrid[0:size, 0:size]
    pattern = [(xx // 4) % 2, (yy // 4) % 2, ((xx + yy) // 4) % 2, np.zeros_like(xx)][label % 4]
    base = 60 + 120 * pattern + 40 * (label // 4)
    img = np.clip(base + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    return img


def write_folder(root: Path, classes: int = 4, per_class: int = 12, mode: str = "L") -> Path:
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = make_image(c, i)
            img = Image.fromarray(arr, "L")
            if mode != "L":
                img = img.convert(mode)
            img.save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_folder) -> Path:
    """A run through data -> evaluate on the tiny folder (about 10 s on 2 cores)."""
    from edgekd.cli import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    args = [
        "run",
        "--data",
        str(tiny_folder),
        "--out",
        str(out),
        "--stages",
        "data,teacher,soft_labels,student,baseline,evaluate",
        "--set",
        "gate.max_accuracy_drop=100",
    ]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    rc = main(args)
    assert rc == 0
    return out
