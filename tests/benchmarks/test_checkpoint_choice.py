"""The checkpoint-choice benchmark: best-on-validation and last-epoch weights of finished runs on their test split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgekd.benchmarks import checkpoint_choice
from edgekd.pipeline import stages
from edgekd.pipeline.data import load_split
from edgekd.pipeline.models import load_state_dict_file
from edgekd.pipeline.rundir import RunDir, read_json


def test_best_and_last_weights_are_measured_and_compared(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    metrics = read_json(run.metrics)
    # the baseline's checkpoint made to hold its best weights: last and best are the same model
    d = stages.student_seed_dir(run, "baseline")
    ck = torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=True)
    ck["model"] = load_state_dict_file(d / "model.safetensors")
    torch.save(ck, d / "checkpoint.pt")
    # the student's last epoch made to differ from its best: it answers class c for every image
    labels = load_split(run).labels("test")
    with np.load(run.path("eval", "logits.npz")) as z:
        best_pred = z["student"].argmax(1)
    c = int(np.bincount(best_pred, minlength=2).argmin())  # a class the best weights answer least often
    sd = stages.student_seed_dir(run, "student")
    ck = torch.load(sd / "checkpoint.pt", map_location="cpu", weights_only=True)
    bias = [key for key in ck["model"] if key.startswith("classifier") and key.endswith("bias")][-1]
    ck["model"][bias] = torch.zeros_like(ck["model"][bias])
    ck["model"][bias][c] = 1e4
    torch.save(ck, sd / "checkpoint.pt")
    out = tmp_path / "res" / "cc"
    assert checkpoint_choice.main(["--collect", f"tiny={run.root}", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    (row,) = doc["rows"]
    for kind in ("student", "baseline"):
        m = row["kinds"][kind]
        # best-val weights are what evaluate measured
        assert m["seeds"][0]["best_val_accuracy"] == pytest.approx(metrics[kind]["per_seed"][0]["accuracy"])
    # last-epoch weights are the checkpoint's: right exactly on the class-c images; best-val weights evaluate's
    seed0 = row["kinds"]["student"]["seeds"][0]
    assert seed0["last_correct"] == "".join("1" if y == c else "0" for y in labels)
    assert seed0["best_val_correct"] == "".join("1" if ok else "0" for ok in best_pred == labels)
    assert seed0["last_correct"] != seed0["best_val_correct"]
    b = row["kinds"]["baseline"]
    assert b["last_minus_best_pts"] == 0 and b["ci95"] == [0.0, 0.0] and b["mcnemar_p"] == 1.0
    assert set(row["kd_gain"]) == {"best_val", "last"}
    assert row["kd_gain"]["best_val"]["pts"] == pytest.approx(metrics["kd_verdict"]["kd_gain_mean"])
    assert "| tiny | baseline | 1 |" in out.with_suffix(".md").read_text()


def test_a_seed_without_a_finished_checkpoint_is_left_out_and_named(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    (stages.student_seed_dir(run, "student") / "checkpoint.pt").unlink()
    row = checkpoint_choice.run_rows("tiny", run.root)
    assert row["missing"] == ["student seed 0"] and "student" not in row["kinds"] and "kd_gain" not in row


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        checkpoint_choice.main(["--collect", f"x={tmp_path}", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "not a finished run" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
