"""A second `edgekd run` with nothing changed re-runs nothing (issue 13): evaluate and export are skipped by
the fingerprint of their inputs, their files are left untouched; a changed input (a gate) redoes evaluate only."""

import shutil

from edgekd.cli import main
from edgekd.pipeline.rundir import RunDir
from tests.conftest import TINY_OVERRIDES

STAGES = "data,teacher,soft_labels,student,baseline,evaluate,export"


def _args(data, out, *extra):
    a = ["run", "--data", str(data), "--out", str(out), "--stages", STAGES]
    for o in TINY_OVERRIDES + ["gate.max_accuracy_drop=100", "export.formats=[onnx]", "export.parity_images=6"]:
        a += ["--set", o]
    for o in extra:
        a += ["--set", o]
    return a


def test_second_run_reruns_nothing(tiny_run, tiny_folder, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    assert main(_args(tiny_folder, out)) == 0  # adds the export
    run = RunDir(out)
    before = run.stages()
    files = [out / "eval" / "metrics.json", out / "eval" / "logits.npz", out / "exports" / "onnx" / "model.onnx"]
    files += [out / "exports" / "manifest.json", out / "student" / "model.safetensors"]
    files += sorted((out / "soft_labels").rglob("*.safetensors"))  # found in the cache, not recomputed
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    capfd.readouterr()

    assert main(_args(tiny_folder, out)) == 0
    err = capfd.readouterr().err
    assert "evaluate: up to date, skipped" in err and "export: up to date, skipped" in err, err
    after = run.stages()
    for name in ("teacher", "soft_labels", "student", "baseline", "evaluate", "export"):
        assert after[name]["fingerprint"] == before[name]["fingerprint"], name
        if name != "soft_labels":  # a cache hit is re-recorded (0 s); its files are checked below
            assert after[name]["finished_at"] == before[name]["finished_at"], name
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # a changed evaluate input (a gate) redoes evaluate, not the export (its inputs are the weights)
    assert main(_args(tiny_folder, out, "gate.max_accuracy_drop=99")) == 0
    err = capfd.readouterr().err
    assert "evaluate: up to date" not in err and "export: up to date, skipped" in err
    assert run.stages()["evaluate"]["fingerprint"] != before["evaluate"]["fingerprint"]
