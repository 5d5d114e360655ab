"""Experiment tracking (pipeline/tracking.py): MLflow records read back with MlflowClient from a file store,
TensorBoard events with tensorboard's EventAccumulator, and a tracker that fails warns once and stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.pipeline import tracking
from edgekd.pipeline.config import load_config
from edgekd.pipeline.rundir import RunDir


def _run(tmp_path: Path) -> RunDir:
    """A run directory with the files the end-of-run summary reads (report.json, histories, manifest)."""
    run = RunDir(tmp_path / "run")
    for kind, vals in (("student", [0.5, 0.75]), ("baseline", [0.5, 0.625])):
        hist = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "val_accuracy": v} for i, v in enumerate(vals)]
        (run.root / kind).mkdir(parents=True)
        (run.root / kind / "history.json").write_text(json.dumps({"history": hist}))
    rep = {
        "teacher": {"accuracy": 0.9, "macro_f1": 0.85, "per_class_recall": {"ok": 0.95, "crack": 0.8}},
        "student": {"accuracy": 0.8, "macro_f1": 0.7, "per_class_recall": {"ok": 0.9, "crack": 0.5}},
        "baseline": {"accuracy": 0.75, "macro_f1": 0.6, "per_class_recall": {"ok": 0.9, "crack": 0.4}},
        "kd_verdict": {"kd_gain_mean": 5.0, "kd_gain_ci95": [1.0, 9.0], "mcnemar_p": 0.01, "conclusion": "KD helped"},
        "gates": [{"name": "max_accuracy_drop", "passed": True}],
    }
    run.report_json.write_text(json.dumps(rep))
    (run.root / "MODEL_CARD.md").write_text("# card\n")
    qat = {"qat": {"used": True, "history": [{"epoch": 1, "loss": 0.2, "calibration_agreement": 0.97}]}}
    manifest = {
        "artifacts": [
            {
                "name": "tflite-int8",
                "size_bytes": 2_000_000,
                "parity": {"agreement": 0.98},
                "details": {"quantization": qat},
            }
        ]
    }
    (run.root / "exports").mkdir()
    (run.root / "exports" / "manifest.json").write_text(json.dumps(manifest))
    return run


def _cfg(**track):
    return load_config(None, "quick", {"track": track, "train": {"epochs": 3}})


def test_mlflow_params_metrics_and_artifacts_read_back(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    run = _run(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    cfg = _cfg(tensorboard=False, mlflow=True, mlflow_uri=uri, mlflow_experiment="edgekd-test")
    with tracking.session(cfg, run) as t:
        for epoch, loss in ((1, 0.9), (2, 0.4)):
            tracking.epoch_end("student", {"epoch": epoch, "step": epoch * 5, "train_loss": loss, "note": "x"})
        t.finish(run)
    tracking.epoch_end("student", {"epoch": 3, "train_loss": 0.1})  # after the session: goes nowhere
    assert "warning" not in capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("edgekd-test").experiment_id])
    assert r.info.status == "FINISHED" and r.data.tags["edgekd.run_dir"] == str(run.root.resolve())
    assert r.data.params["train.epochs"] == "3" and r.data.params["kd.alpha"] == "auto"
    assert r.data.params["track.mlflow"] == "true"
    hist = client.get_metric_history(r.info.run_id, "student/train_loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 0.9), (2, 0.4)]
    assert [m.value for m in client.get_metric_history(r.info.run_id, "student/step")] == [5, 10]
    assert r.data.metrics["test/student/accuracy"] == 0.8 and r.data.metrics["test/baseline/recall/crack"] == 0.4
    assert r.data.metrics["kd/gain_points"] == 5.0 and r.data.tags["kd_verdict"] == "KD helped"
    gain = client.get_metric_history(r.info.run_id, "kd_vs_baseline/val_accuracy_gain_points")
    assert sorted((m.step, round(m.value, 6)) for m in gain) == [(1, 0.0), (2, 12.5)]
    qat = client.get_metric_history(r.info.run_id, "qat/tflite-int8/calibration_agreement")
    assert [(m.step, m.value) for m in qat] == [(1, 0.97)]
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.json", "MODEL_CARD.md", "manifest.json"} <= arts


def test_tensorboard_scalars_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(tmp_path)
    with tracking.session(_cfg(), run) as t:
        tracking.epoch_end("seeds/1/baseline", {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.25})
        tracking.epoch_end("seeds/1/baseline", {"epoch": 2, "train_loss": 0.25, "val_accuracy": float("nan")})
        t.finish(run)
    (f,) = (run.root / "tb").glob("events.out.tfevents.*")
    ea = EventAccumulator(str(f))
    ea.Reload()
    assert [(s.step, s.value) for s in ea.Scalars("seeds/1/baseline/train_loss")] == [(1, 0.5), (2, 0.25)]
    assert [s.step for s in ea.Scalars("seeds/1/baseline/val_accuracy")] == [1]  # NaN is not logged
    assert ea.Scalars("test/teacher/recall/crack")[0].value == pytest.approx(0.8)
    assert ea.Scalars("artifact/tflite-int8/size_mb")[0].value == pytest.approx(2.0)


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path, capsys):
    run = _run(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cfg = _cfg(tensorboard=True, mlflow=True, mlflow_uri=(blocker / "mlruns").as_uri())
    with tracking.session(cfg, run) as t:
        assert [type(s).__name__ for s in t.sinks] == ["TensorBoardSink"]  # MLflow could not open its store
        sink = t.sinks[0]

        def broken(*a):
            raise OSError("No space left on device")

        sink.scalars = broken
        for epoch in (1, 2, 3):
            tracking.epoch_end("student", {"epoch": epoch, "train_loss": 1.0})
        t.finish(run)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 2, err
    assert err[0].startswith("edgekd: warning: MLflow tracking turned off:")
    assert err[1] == "edgekd: warning: TensorBoard tracking turned off: OSError: No space left on device"


def test_session_marks_an_mlflow_run_failed_on_error_but_not_on_a_gate(tmp_path):
    from mlflow.tracking import MlflowClient

    from edgekd.pipeline.errors import EdgekdError, GateFailed

    run = _run(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    cfg = _cfg(tensorboard=False, mlflow=True, mlflow_uri=uri)
    for exc in (GateFailed("gate failed: x"), EdgekdError("bad input")):
        with pytest.raises(EdgekdError), tracking.session(cfg, run):
            raise exc
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id], order_by=["start_time ASC"])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_flatten_and_metric_names():
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2], "d": None, "e": "x"}}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "a.d": "null",
        "a.e": "x",
    }
    assert tracking.metric_name("test/student/recall/défaut #1") == "test/student/recall/d_faut _1"
