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
    doc = json.loads((tmp_path / "teachers.json").read_text())
    # the recorded command makes the whole file again, the earlier call's row included
    assert doc["command"].endswith(f"--collect a={tiny_run} --collect b={tiny_run} --out {out}")
    b = doc["rows"][1]
    # the same teacher twice: the per-image results are the evaluate stage's, and the paired difference is 0
    assert b["correct"] == "".join("1" if ok else "0" for ok in z_correct(tiny_run))
    assert b["vs_reference"] == {"reference": "a", "gain_pts": 0.0, "ci95": [0.0, 0.0], "mcnemar_p": 1.0}


def z_correct(run_dir):
    with np.load(RunDir(run_dir).path("eval", "logits.npz")) as z:
        return z["teacher"].argmax(1) == z["labels"]


def test_rows_are_compared_pairwise_on_the_same_test_images():
    n = 200
    ref = np.zeros(n, bool)
    ref[:100] = True
    better = ref.copy()
    better[100:130] = True  # right on 30 more images, wrong on none the reference got right

    def row(name, correct, fp="split-1"):
        return {"name": name, "correct": "".join("1" if c else "0" for c in correct), "test_fingerprint": fp}

    rows = [row("ref", ref), row("better", better), row("same", ref), row("other split", better, "split-2")]
    teacher_ablation.compare_to(rows, "ref")
    v = rows[1]["vs_reference"]
    assert v["gain_pts"] == 15.0 and 0 < v["ci95"][0] < 15 < v["ci95"][1] and v["mcnemar_p"] < 1e-6
    assert rows[2]["vs_reference"]["gain_pts"] == 0.0 and rows[2]["vs_reference"]["mcnemar_p"] == 1.0
    assert "vs_reference" not in rows[0] and "vs_reference" not in rows[3]  # itself; another test split


def test_a_folder_that_is_not_a_finished_run_is_one_line_exit_2(tmp_path, capsys):
    import pytest

    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(SystemExit) as e:
        teacher_ablation.main(["--collect", f"a={tmp_path / 'not-a-run'}", "--out", str(tmp_path / "t")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config file not found" in err
    assert not list(tmp_path.glob("t.*"))
