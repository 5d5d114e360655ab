"""benchmarks/teacher_ablation.py: a row is the run's own teacher on its own test split."""

from __future__ import annotations

import json

import numpy as np

from edgekd.benchmarks import teacher_ablation
from edgekd.pipeline.data import load_split
from edgekd.pipeline.rundir import RunDir


def test_rows_are_the_evaluated_teacher_and_earlier_rows_are_kept(tiny_run, tmp_path):
    out = tmp_path / "teachers"
    assert teacher_ablation.main(["--collect", f"a={tiny_run}", "--out", str(out)]) == 0
    doc = json.loads((tmp_path / "teachers.json").read_text())
    (row,) = doc["rows"]
    # the evaluate stage's teacher logits give the same accuracy
    with np.load(RunDir(tiny_run).path("eval", "logits.npz")) as z:
        acc = float((z["teacher"].argmax(1) == z["labels"]).mean())
    assert abs(row["accuracy"] - acc) < 1e-9
    assert row["test_images"] == len(load_split(RunDir(tiny_run)).subset("test"))
    assert row["settings"]["image_size"] == 32 and row["settings"]["ensemble"] == ["efficientnet_lite0"]
    assert teacher_ablation.main(["--collect", f"b={tiny_run}", "--out", str(out)]) == 0
    names = [r["name"] for r in json.loads((tmp_path / "teachers.json").read_text())["rows"]]
    assert names == ["a", "b"]
    assert "| b |" in (tmp_path / "teachers.md").read_text()
