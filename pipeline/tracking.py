"""Experiment tracking: TensorBoard event files (RUN_DIR/tb/, on by default) and MLflow (`track.mlflow=true`).

    with tracking.session(cfg, run) as t:    # edgekd.stage_table.run_stages (the CLI and the Python API)
        ...                                   # train_model calls epoch_end(name, record) after every epoch
        t.finish(run)                         # the run's results, read back from its files

`train_model` calls `epoch_end` after every epoch on rank 0; with no session open it does nothing. What is
logged: per training (teacher, student, baseline, seeds/<i>/..., kd auto candidates) every numeric field
of the epoch's history row (losses, accuracies, learning rate, seconds) at step = epoch; at the end, from
report.json, the student's and baseline's history.json and the exports manifest: KD vs baseline per epoch
(validation accuracy), test metrics of teacher, student and baseline (overall and per class), the KD
verdict, the artifacts (parity, size, latency) and the QAT epochs of int8 artifacts. MLflow also gets the
resolved config (flattened) as params and report.json, MODEL_CARD.md, model_card.json, config.yaml and the
exports manifest as artifacts; one MLflow run per invocation, tagged with the run directory.

TensorBoard files are written with tensorboard's own record writer and protos (no TensorFlow import, which
would cost seconds at start-up). A tracker that fails (library missing, URI unreachable, disk full) prints
one warning line and turns itself off: tracking never stops a run nor hides that it stopped.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

_ACTIVE: list[_Sink] = []
RESULT_STEP = 0  # step of the end-of-run figures (TensorBoard and MLflow want one)


def epoch_end(name: str, record: dict[str, Any]) -> None:
    """`name`: the training ('teacher', 'student', 'baseline', 'seeds/1/student', ...); `record`: the epoch's
    history row (epoch, step, train_loss, train_accuracy, lr, val_accuracy, val_loss, ...)."""
    if not _ACTIVE:
        return None
    step = int(record.get("epoch") or 0)
    values = {f"{name}/{k}": v for k, v in record.items() if k != "epoch" and _number(v) is not None}
    for sink in list(_ACTIVE):
        sink.call("scalars", values, step)
    return None


# ----------------------------------------------------------------------------------------------
# helpers


def _number(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _warn(msg: str) -> None:
    print(f"edgekd: warning: {msg}", file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """{'train': {'epochs': 6}} -> {'train.epochs': '6'} (lists and None as JSON)."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    out[key] = d if isinstance(d, str) else json.dumps(d)
    return out


_SAFE = re.compile(r"[^0-9A-Za-z_\-. /:]")


def metric_name(name: str) -> str:
    """A metric/tag name MLflow accepts (alphanumerics, _ - . space / :)."""
    return _SAFE.sub("_", name)


# ----------------------------------------------------------------------------------------------
# sinks


class _Sink:
    label = "tracking"

    def __init__(self) -> None:
        self.alive = True

    def call(self, method: str, *args: Any) -> None:
        if not self.alive:
            return
        try:
            getattr(self, method)(*args)
        except Exception as e:  # never fail the run; say once that this tracker stopped
            self.alive = False
            _warn(f"{self.label} tracking turned off: {_first_line(e)}")
            try:
                self.close("FAILED")
            except Exception:
                pass

    # what a sink implements
    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def text(self, tag: str, value: str) -> None: ...

    def params(self, flat: dict[str, str]) -> None: ...

    def artifacts(self, paths: list[Path]) -> None: ...

    def close(self, status: str) -> None: ...


class TensorBoardSink(_Sink):
    """One event file per invocation in `logdir` (TensorBoard merges the files of a folder)."""

    label = "TensorBoard"

    def __init__(self, logdir: Path) -> None:
        super().__init__()
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        self.path = logdir / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.edgekd"
        self._writer = RecordWriter(open(self.path, "wb"))
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        S = self._summary_pb2.Summary
        vals = [S.Value(tag=metric_name(k), simple_value=float(v)) for k, v in values.items() if _number(v) is not None]
        if vals:
            self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=S(value=vals)))

    def text(self, tag: str, value: str) -> None:
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text.metadata import create_summary_metadata

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[value.encode()], tensor_shape=tensor_shape_pb2.TensorShapeProto()
        )
        S = self._summary_pb2.Summary
        summ = S(value=[S.Value(tag=metric_name(tag), metadata=create_summary_metadata(tag, ""), tensor=tensor)])
        self._write(self._event_pb2.Event(wall_time=time.time(), step=RESULT_STEP, summary=summ))

    def close(self, status: str) -> None:
        if not self._writer.closed:
            self._writer.close()


class MlflowSink(_Sink):
    """One MLflow run per invocation, in experiment `experiment` of `uri` (default: ./mlruns file store)."""

    label = "MLflow"
    PARAMS_PER_CALL = 100  # MLflow's log_batch limits
    METRICS_PER_CALL = 1000

    def __init__(self, uri: Optional[str], experiment: str, run_name: str, tags: dict[str, str]) -> None:
        super().__init__()
        self.uri = default_mlflow_uri(uri)
        if self.uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked; the local
            # ./mlruns folder is what this tool promises by default (a database URI avoids the flag)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param = Metric, Param
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

    def scalars(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [
            self._Metric(metric_name(k), float(v), now, int(step)) for k, v in values.items() if _number(v) is not None
        ]
        for i in range(0, len(metrics), self.METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + self.METRICS_PER_CALL])

    def text(self, tag: str, value: str) -> None:
        self.client.set_tag(self.run_id, metric_name(tag), value[:5000])

    def params(self, flat: dict[str, str]) -> None:
        items = [self._Param(k, v[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), self.PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i : i + self.PARAMS_PER_CALL])

    def artifacts(self, paths: list[Path]) -> None:
        for p in paths:
            if p.is_file():
                self.client.log_artifact(self.run_id, str(p))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def default_mlflow_uri(uri: Optional[str]) -> str:
    """`track.mlflow_uri`, or the file store ./mlruns of the working directory; a plain path becomes file:."""
    if not uri:
        return Path("mlruns").resolve().as_uri()
    if "://" not in uri and not uri.startswith("file:"):
        return Path(uri).expanduser().resolve().as_uri()
    return uri


# ----------------------------------------------------------------------------------------------
# the session


class Session:
    """The trackers of one invocation; `finish(run)` logs the run's results from its files."""

    def __init__(self, sinks: list[_Sink]) -> None:
        self.sinks = sinks

    def _all(self, method: str, *args: Any) -> None:
        for s in self.sinks:
            s.call(method, *args)

    def finish(self, run, failed_gate: Optional[str] = None) -> None:
        """Everything the run's files hold now; never raises."""
        if not any(s.alive for s in self.sinks):
            return
        try:
            values, texts, series = run_results(run)
        except Exception as e:  # a half-written run directory must not turn into a crash here
            _warn(f"tracking: could not read the run's results: {_first_line(e)}")
            return
        for tag, points in series.items():
            for step, v in points:
                self._all("scalars", {tag: v}, step)
        self._all("scalars", values, RESULT_STEP)
        if failed_gate:
            texts["gate_failed"] = failed_gate
        for tag, text in texts.items():
            self._all("text", tag, text)
        files = [
            run.report_json,
            run.path("MODEL_CARD.md"),
            run.path("model_card.json"),
            run.path("config.yaml"),
            run.path("exports", "manifest.json"),
        ]
        self._all("artifacts", files)

    def close(self, status: str = "FINISHED") -> None:
        self._all("close", status)


def open_sinks(cfg, run) -> list[_Sink]:
    sinks: list[_Sink] = []
    t = cfg.track
    if t.tensorboard:
        try:
            sinks.append(TensorBoardSink(run.path("tb")))
        except Exception as e:
            _warn(
                f"TensorBoard tracking turned off: {_first_line(e)} (pip install tensorboard; track.tensorboard=false)"
            )
    if t.mlflow:
        try:
            s = MlflowSink(
                t.mlflow_uri,
                t.mlflow_experiment or cfg.name,
                Path(run.root).resolve().name,
                {"edgekd.run_dir": str(Path(run.root).resolve()), "edgekd.preset": str(cfg.preset)},
            )
            s.call("params", flatten(cfg.model_dump(mode="json")))
            sinks.append(s)
        except Exception as e:
            _warn(f"MLflow tracking turned off: {_first_line(e)} (pip install mlflow-skinny, check track.mlflow_uri)")
    return sinks


@contextmanager
def session(cfg, run, enabled: bool = True) -> Iterator[Session]:
    """Open the trackers `cfg.track` asks for (none when not `enabled`, e.g. on ranks other than 0), route
    `epoch_end` to them, and close them (MLflow status FAILED when the block raised anything but a gate)."""
    s = Session(open_sinks(cfg, run) if enabled else [])
    _ACTIVE.extend(s.sinks)
    status = "FINISHED"
    try:
        yield s
    except BaseException as e:
        from edgekd.pipeline.errors import GateFailed

        status = (
            "FINISHED" if isinstance(e, GateFailed) else ("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        )
        raise
    finally:
        for sink in s.sinks:
            if sink in _ACTIVE:
                _ACTIVE.remove(sink)
        s.close(status)


# ----------------------------------------------------------------------------------------------
# the run's results, from its files


def _history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data.get("history", []) if isinstance(data, dict) else []


def run_results(run) -> tuple[dict[str, float], dict[str, str], dict[str, list[tuple[int, float]]]]:
    """(end-of-run scalars, texts, per-epoch series) from report.json, history.json files and the manifest."""
    rep = json.loads(run.report_json.read_text()) if run.report_json.is_file() else {}
    values: dict[str, float] = {}
    texts: dict[str, str] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    for model in ("teacher", "student", "baseline"):
        m = rep.get(model) or {}
        for key in ("accuracy", "macro_f1", "ece", "agreement_teacher"):
            if _number(m.get(key)) is not None:
                values[f"test/{model}/{key}"] = m[key]
        for cls, r in (m.get("per_class_recall") or {}).items():
            if _number(r) is not None:
                values[f"test/{model}/recall/{cls}"] = r
    v = rep.get("kd_verdict") or {}
    if v:
        values["kd/gain_points"] = v.get("kd_gain_mean")
        lo, hi = (v.get("kd_gain_ci95") or [None, None])[:2]
        values["kd/gain_ci95_low"], values["kd/gain_ci95_high"] = lo, hi
        values["kd/mcnemar_p"] = v.get("mcnemar_p")
        texts["kd_verdict"] = str(v.get("conclusion"))
    for g in rep.get("gates") or []:
        values[f"gate/{g.get('name')}/passed"] = 1.0 if g.get("passed") else 0.0
    # KD vs baseline per epoch (validation accuracy of the shipped seed)
    hs = {int(r["epoch"]): r for r in _history(run.path("student", "history.json")) if "epoch" in r}
    hb = {int(r["epoch"]): r for r in _history(run.path("baseline", "history.json")) if "epoch" in r}
    for e in sorted(set(hs) & set(hb)):
        s, b = _number(hs[e].get("val_accuracy")), _number(hb[e].get("val_accuracy"))
        if s is not None and b is not None:
            series.setdefault("kd_vs_baseline/val_accuracy_gain_points", []).append((e, (s - b) * 100))
            series.setdefault("kd_vs_baseline/student_val_accuracy", []).append((e, s))
            series.setdefault("kd_vs_baseline/baseline_val_accuracy", []).append((e, b))
    # artifacts: parity (export) and latency (bench)
    manifest_file = run.path("exports", "manifest.json")
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    for a in manifest.get("artifacts") or []:
        name, p = a.get("name"), a.get("parity") or {}
        for key in ("agreement", "accuracy", "max_abs"):
            if _number(p.get(key)) is not None:
                values[f"artifact/{name}/{key}"] = p[key]
        if _number(a.get("size_bytes")) is not None:
            values[f"artifact/{name}/size_mb"] = a["size_bytes"] / 1e6
        qat = ((a.get("details") or {}).get("quantization") or {}).get("qat") or {}
        for row in qat.get("history") or []:
            for key in ("loss", "calibration_mse", "calibration_agreement"):
                if _number(row.get(key)) is not None:
                    series.setdefault(f"qat/{name}/{key}", []).append((int(row["epoch"]), row[key]))
    for e in (rep.get("artifacts") or []) + (rep.get("teacher_bench") or []) + (rep.get("student_bench") or []):
        lat = e.get("latency_ms") or {}
        if _number(lat.get("p50")) is not None:
            values[f"latency_ms/{e.get('name')}/{e.get('profile')}/p50"] = lat["p50"]
    return {k: float(x) for k, x in values.items() if _number(x) is not None}, texts, series
