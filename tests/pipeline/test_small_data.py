"""The collapse guard (issue 11): the quick preset on a small, imbalanced, grayscale folder must learn the
classes, not answer the commonest one. Epoch-sized schedules gave such a set a dozen optimizer steps and a
student at the majority-class share (macro-F1 0.08)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.benchmarks.data_shapes import make_dataset
from edgekd.cli import main

pytestmark = pytest.mark.slow  # the quick preset's own schedule: minutes on 2 cores


def test_quick_preset_learns_a_small_imbalanced_grayscale_set(tmp_path):
    counts = make_dataset(tmp_path / "data", images=150, classes=5, size=40, mode="L", imbalance=10.0, seed=0)
    assert max(counts.values()) >= 9 * min(counts.values())
    out = tmp_path / "run"
    rc = main(
        [
            "run",
            "--preset",
            "quick",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--stages",
            "data,teacher,soft_labels,student,baseline,evaluate",
            *("--set", "data.image_size=32"),  # the files are 40 px; the preset's schedules are kept
            *("--set", "train.threads=2"),
            *("--set", "gate.max_accuracy_drop=100"),
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    split = json.loads((out / "data" / "split.json").read_text())
    labels = np.array([it["label"] for it in split["items"] if it["split"] == "test"])
    majority = np.bincount(labels, minlength=5).max() / len(labels)
    student = rep["student"]
    summary = (
        f"student {student['accuracy']:.1%} (macro-F1 {student['macro_f1']:.2f}), baseline "
        f"{rep['baseline']['accuracy']:.1%}, teacher {rep['teacher']['accuracy']:.1%}, majority {majority:.1%}"
    )
    for name in ("teacher", "student", "baseline"):  # macro-F1 beside accuracy for every model
        assert 0.0 <= rep[name]["macro_f1"] <= 1.0
        assert len(rep[name]["per_class_recall"]) == 5
    assert student["accuracy"] >= majority + 0.10, summary
    # always answering the commonest class scores macro-F1 2m / (1 + m) / k (0.13 here); a student that has
    # learned the classes is far above it
    assert student["macro_f1"] >= 2 * (2 * majority / (1 + majority)) / 5, summary
    assert rc == 0, summary  # no gate failed (the collapse gate agrees)
