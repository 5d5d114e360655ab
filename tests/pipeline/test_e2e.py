"""End to end on a tiny generated ImageFolder through the CLI: data -> teacher -> soft labels ->
student + baseline -> evaluate; then caching, invalidation, gates and error paths."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgekd.cli import main
from edgekd.pipeline.rundir import RunDir
from tests.conftest import TINY_OVERRIDES

CORE = "data,teacher,soft_labels,student,baseline,evaluate"


def _args(data, out, *extra):
    a = ["run", "--data", str(data), "--out", str(out), "--stages", CORE]
    for o in TINY_OVERRIDES + list(extra):
        a += ["--set", o]
    return a


def test_report_schema(tiny_run):
    rep = json.loads((tiny_run / "report.json").read_text())
    for name in ("teacher", "student", "baseline"):
        r = rep[name]
        assert r["arch"] and r["params"] > 0 and 0 <= r["accuracy"] <= 1
        assert set(r["per_class_recall"]) == {f"class_{i}" for i in range(4)}
        assert np.array(r["confusion_matrix"]).sum() == r["num_images"] == 12
    assert rep["teacher"]["params"] > 2 * rep["student"]["params"]  # teacher clearly larger
    assert set(rep["stages"]) >= {"data", "teacher", "soft_labels", "student", "baseline", "evaluate"}
    assert rep["config"]["kd"]["alpha"] == 0.9 and rep["gates"][0]["name"] == "max_accuracy_drop"
    md = (tiny_run / "report.md").read_text()
    assert "hard-label baseline" in md and "teacher" in md
    logits = np.load(tiny_run / "eval" / "logits.npz")
    assert logits["student"].shape == (12, 4)
    # the reported accuracy is the accuracy of the saved logits
    assert rep["student"]["accuracy"] == pytest.approx((logits["student"].argmax(1) == logits["labels"]).mean())


def test_second_run_skips_unchanged_stages_and_recomputes_on_change(tiny_run, tiny_folder, tmp_path, capfd):
    run = RunDir(tiny_run)
    before = run.stages()
    assert main(_args(tiny_folder, tiny_run, "gate.max_accuracy_drop=100")) == 0
    err = capfd.readouterr().err
    assert "teacher: up to date, skipped" in err and "soft labels: cached" in err and "student: up to date" in err
    assert run.stages()["teacher"]["finished_at"] == before["teacher"]["finished_at"]

    # one changed training image -> new data fingerprint -> teacher and soft labels recomputed (a changed
    # test image would retrain the teacher to the same bytes and rightly keep the soft labels)
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    split = json.loads(run.split_json.read_text())
    victim = data / sorted(i["key"] for i in split["items"] if i["split"] == "train")[0]
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(victim)
    assert main(_args(data, out, "gate.max_accuracy_drop=100")) == 0
    err = capfd.readouterr().err
    assert "teacher: up to date" not in err and "soft labels: cached" not in err
    assert RunDir(out).stages()["soft_labels"]["fingerprint"] != before["soft_labels"]["fingerprint"]


def test_soft_label_cache_key_changes_with_preprocessing(tiny_run):
    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.stages import soft_label_dir

    run = RunDir(tiny_run)
    cfg = run.config()
    data = load_split(run)
    d1, fp1 = soft_label_dir(cfg, run, data)
    assert d1.exists() and fp1 == run.stages()["soft_labels"]["fingerprint"]
    cfg.data.image_size = 40
    assert soft_label_dir(cfg, run, data)[1] != fp1
    cfg.data.image_size = 32
    cfg.data.mean = (0.5, 0.5, 0.5)
    assert soft_label_dir(cfg, run, data)[1] != fp1


def test_gate_failure_exits_3_with_results_written(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    # the gate only re-reads metrics: an impossible limit must fail it
    rc = subprocess.run(
        [sys.executable, "-m", "edgekd", "evaluate", str(out), "--set", "gate.max_accuracy_drop=-101"],
        capture_output=True,
        text=True,
        env={"EDGEKD_QUIET": "1", "PATH": "/usr/bin:/bin"},
    )
    assert rc.returncode == 3, rc.stderr
    last = rc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgekd: gate failed: student trails teacher") and "Traceback" not in rc.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["gates"][0]["passed"] is False and rep["gates"][0]["limit_points"] == -101


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    cases = [
        (["run", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "data directory not found"),
        (["run", "--out", str(tmp_path / "r"), "--set", "train.epoch=1"], "did you mean 'train.epochs'"),
        (["evaluate", str(tmp_path / "nothing")], "not an edgekd run directory"),
        (["run", "--out", str(tmp_path / "r"), "--stages", "data,tacher"], "unknown stage"),
    ]
    for argv, needle in cases:
        p = subprocess.run([sys.executable, "-m", "edgekd", *argv], capture_output=True, text=True)
        assert p.returncode == 2, (argv, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_online_kd_with_feature_matching(tiny_folder, tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    rc = main(
        [
            "distill",
            str(out),
            "--set",
            "kd.mode=online",
            "--set",
            "kd.feature.enabled=true",
            "--set",
            "kd.feature.teacher_layer=_blocks.5",
            "--set",
            "kd.feature.student_layer=features.4",
            "--set",
            "train.epochs=1",
        ]
    )
    assert rc == 0
    hist = json.loads((out / "student" / "history.json").read_text())["history"]
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"])


def test_dkd_loss_runs(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    assert main(["distill", str(out), "--set", "kd.loss=dkd", "--set", "train.epochs=1"]) == 0


def test_teacher_is_reproducible_to_the_byte(tiny_run, tiny_folder, tmp_path):
    """Same data, config and seed -> the same teacher checkpoint file: the new classifier head is seeded
    and the safetensors header is written in a stable order (its sha256 keys the soft-label cache and
    is embedded in every exported artifact)."""
    out = tmp_path / "again"
    args = ["run", "--data", str(tiny_folder), "--out", str(out), "--stages", "data,teacher"]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    assert main(args) == 0
    a = (tiny_run / "teacher" / "model.safetensors").read_bytes()
    b = (out / "teacher" / "model.safetensors").read_bytes()
    assert a == b
