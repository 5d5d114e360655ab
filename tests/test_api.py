"""The Python API (edgekd/api.py) and what a full run leaves beside its report: the example script on tiny
data (distil, export, bench), the typed report against report.json, the model card's figures against
report.json and the manifest, the TensorBoard events read back, and the per-class recall gate (exit 3)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "distill_api.py"
# the example's run on tiny data: a smoke run (see TINY_OVERRIDES), quick exports, a short benchmark
EXAMPLE_OVERRIDES = TINY_OVERRIDES + [
    "gate.max_accuracy_drop=100",
    "export.calibration_images=8",
    "export.int8_qat_epochs=1",
    "export.int8_qat_images=16",
    "bench.min_queries=5",
    "bench.min_seconds=0",
    "bench.warmup=1",
]


@pytest.fixture(scope="module")
def example_run(tiny_folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """examples/distill_api.py on the tiny ImageFolder, as CI runs it (about a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("api") / "run"
    args = [
        sys.executable,
        str(EXAMPLE),
        "--data",
        str(tiny_folder),
        "--out",
        str(out),
        "--formats",
        "onnx,tflite-int8",
    ]
    for o in EXAMPLE_OVERRIDES:
        args += ["--set", o]
    p = subprocess.run(args, capture_output=True, text=True, cwd=out.parent, env=_env())
    return out, p


def _env() -> dict:
    import os

    return {**os.environ, "EDGEKD_QUIET": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_import_is_lazy_and_errors_are_one_hierarchy():
    code = (
        "import sys, edgekd.pipeline, edgekd\n"
        "assert 'edgekd.api' not in sys.modules and 'edgekd.stage_table' not in sys.modules, sorted(sys.modules)\n"
        "from edgekd.pipeline.errors import EdgekdError, GateFailed\n"
        "assert edgekd.EdgekdError is EdgekdError and edgekd.GateFailed is GateFailed\n"
        "assert issubclass(edgekd.GateFailed, edgekd.EdgekdError)\n"
        "assert 'edgekd.api' not in sys.modules\n"
        "assert callable(edgekd.distill) and edgekd.Run.open and 'edgekd.api' in sys.modules\n"
        "try:\n    edgekd.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no AttributeError')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr


def test_bad_input_raises_edgekd_error_not_system_exit(tmp_path):
    import edgekd

    with pytest.raises(edgekd.EdgekdError, match="data directory not found"):
        edgekd.distill(data=tmp_path / "missing", out=tmp_path / "r", stages=["data"])
    with pytest.raises(edgekd.EdgekdError, match="did you mean 'train.epochs'"):
        edgekd.distill(data=tmp_path, out=tmp_path / "r", overrides={"train.epoch": 1})
    with pytest.raises(edgekd.EdgekdError, match="not an edgekd run directory"):
        edgekd.Run.open(tmp_path)
    with pytest.raises(edgekd.EdgekdError, match="run directory not found"):
        edgekd.Run.open(tmp_path / "nothing")


def test_gate_failure_raises_gate_failed_with_the_run(tiny_run, tmp_path):
    import edgekd

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    cfg = edgekd.Run.open(out).config
    with pytest.raises(edgekd.GateFailed, match="student trails teacher") as e:
        edgekd.distill(
            data=cfg.data.source,
            out=out,
            preset=cfg.preset,
            overrides={
                **{o.split("=")[0]: _yaml(o.split("=", 1)[1]) for o in TINY_OVERRIDES},
                "gate.max_accuracy_drop": -101,
            },
            stages=["evaluate"],
        )
    rep = e.value.run.report
    assert not rep.passed and rep.gates[0].name == "max_accuracy_drop" and rep.gates[0].passed is False


def _yaml(v: str):
    import yaml

    return yaml.safe_load(v)


def test_example_script_runs_on_tiny_data(example_run):
    out, p = example_run
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "Traceback" not in p.stderr and "edgekd: warning" not in p.stderr, p.stderr[-3000:]
    assert "KD verdict:" in p.stdout and "onnx: ok" in p.stdout and "tflite-int8: ok" in p.stdout
    for f in ("report.json", "report.md", "MODEL_CARD.md", "model_card.json", "exports/manifest.json"):
        assert (out / f).is_file(), f


def test_typed_report_is_report_json(example_run):
    import edgekd

    out, _ = example_run
    rep = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "exports" / "manifest.json").read_text())
    r = edgekd.Run.open(out).report
    for name in ("teacher", "student", "baseline"):
        m = getattr(r, name)
        assert m.accuracy == rep[name]["accuracy"] and m.macro_f1 == rep[name]["macro_f1"]
        assert m.per_class_recall == rep[name]["per_class_recall"] and m.arch == rep[name]["arch"]
    assert r.kd.gain_points == rep["kd_verdict"]["kd_gain_mean"] and r.kd.conclusion == rep["kd_verdict"]["conclusion"]
    assert [a.name for a in r.artifacts] == [a["name"] for a in manifest["artifacts"]] == ["onnx", "tflite-int8"]
    for a, m in zip(r.artifacts, manifest["artifacts"]):
        assert a.ok and a.sha256 == m["sha256"] and a.agreement == m["parity"]["agreement"]
        assert list(a.per_class_recall.values()) == m["parity"]["per_class_recall"]
        bench = [e for e in rep["artifacts"] if e["name"] == a.name]
        assert a.latency_p50_ms == {e["profile"]: e["latency_ms"]["p50"] for e in bench} and a.latency_p50_ms


def _figures(obj, out: set[str]) -> None:
    """Every way the card may print a number of report.json / the manifest: as is, rounded, in percent, in MB."""
    if isinstance(obj, dict):
        for v in obj.values():
            _figures(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _figures(v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        x = float(obj)
        for d in range(5):
            out.add(f"{x:.{d}f}")
            out.add(f"{x * 100:.{d}f}")
        out.add(f"{x / 1e6:.2f}")
        out.add(f"{x:g}")
        out.add(f"{x:.3g}")


def test_every_figure_in_the_model_card_is_from_report_or_manifest(example_run):
    out, _ = example_run
    rep = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "exports" / "manifest.json").read_text())
    card_md = (out / "MODEL_CARD.md").read_text()
    allowed: set[str] = set()
    _figures([rep, manifest], allowed)
    prose = re.sub(r"```.*?```", "", card_md, flags=re.S)  # the config and the command
    prose = re.sub(r"`[^`]*`", "", prose)  # identifiers: hashes, paths, versions
    prose = re.sub(r"^#.*$", "", prose, flags=re.M)
    numbers = re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?", prose)
    assert len(numbers) > 30
    stray = sorted({n.lstrip("+-") for n in numbers} - allowed - {"95", "1", "0"})
    assert not stray, f"figures in MODEL_CARD.md not found in report.json / manifest: {stray}"
    # the per-class table: each cell is that model's (or artifact's) recall of that class
    card = json.loads((out / "model_card.json").read_text())
    labels = manifest["labels"]
    for cls in labels:
        row = next(line for line in card_md.splitlines() if line.startswith(f"| {cls} |") and "%" in line)
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        want = [rep[m]["per_class_recall"][cls] for m in ("teacher", "student", "baseline")]
        want += [a["parity"]["per_class_recall"][labels.index(cls)] for a in manifest["artifacts"]]
        assert cells == [f"{w * 100:.1f}%" for w in want]
    assert card["training_data"]["license"] is None and "Licence: unknown" in card_md
    assert (out / "exports" / "tflite-int8" / "model_card.json").read_text() == (out / "model_card.json").read_text()
    assert card["summary"]["by_artifact_sha256"][manifest["artifacts"][1]["sha256"]].startswith(
        "This file (tflite-int8)"
    )


def test_tensorboard_events_read_back(example_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = example_run
    rep = json.loads((out / "report.json").read_text())
    scalars: dict[str, list] = {}
    texts: dict[str, list] = {}
    for f in sorted((out / "tb").glob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f))
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(ea.Scalars(tag))
        for tag in ea.Tags()["tensors"]:
            texts.setdefault(tag, []).extend(ea.Tensors(tag))
    hist = json.loads((out / "student" / "history.json").read_text())["history"]
    got = sorted((s.step, s.value) for s in scalars["student/train_loss"])
    assert got == [(r["epoch"], pytest.approx(r["train_loss"], rel=1e-6)) for r in hist]
    assert {"teacher/train_loss", "baseline/val_accuracy", "kd_vs_baseline/val_accuracy_gain_points"} <= set(scalars)
    assert scalars["test/student/accuracy"][-1].value == pytest.approx(rep["student"]["accuracy"])
    assert scalars["kd/gain_points"][-1].value == pytest.approx(rep["kd_verdict"]["kd_gain_mean"])
    assert any(t.startswith("latency_ms/tflite-int8/") for t in scalars)
    verdict = texts["kd_verdict"][-1].tensor_proto.string_val[0].decode()
    assert verdict == rep["kd_verdict"]["conclusion"]


class _DropClass:
    """A synthetic artifact: the real runner's logits, with class `c` never winning."""

    def __init__(self, runner, c: int):
        self.runner, self.c = runner, c

    def __call__(self, x):
        lg = self.runner(x).copy()
        lg[:, self.c] = lg.min() - 10.0
        return lg


def test_artifact_that_drops_a_class_fails_the_per_class_gate(example_run, tmp_path, monkeypatch, capsys):
    import edgekd.export.api as export_api
    from edgekd.cli import main

    out = tmp_path / "run"
    shutil.copytree(example_run[0], out)
    manifest = json.loads((out / "exports" / "manifest.json").read_text())
    onnx = manifest["artifacts"][0]["parity"]
    c = max(range(len(onnx["per_class_recall"])), key=lambda i: onnx["per_class_recall"][i] * onnx["class_support"][i])
    assert onnx["per_class_recall"][c] * onnx["class_support"][c] >= 2  # the student gets >= 2 images of it right
    name = manifest["labels"][c]
    real = export_api.load_runner
    monkeypatch.setattr(export_api, "load_runner", lambda *a, **k: _DropClass(real(*a, **k), c))
    # agreement and accuracy gates off: only the per-class gate can fail it
    loose = ["--set", "export.gates.fp32_agreement=0", "--set", "export.gates.fp32_accuracy_drop=100"]
    rc = main(["export", str(out), "--formats", "onnx", *loose])
    err = capsys.readouterr().err
    assert rc == 3, err
    last = err.strip().splitlines()[-1]
    assert "onnx" in last and f"class '{name}' recall" in last and "Traceback" not in err, last
    entry = json.loads((out / "exports" / "manifest.json").read_text())["artifacts"][0]
    assert entry["status"] == "failed" and f"class '{name}'" in entry["reason"]
    assert entry["parity"]["per_class_recall"][c] == 0.0 and "onnx (failed)" in (out / "report.md").read_text()
    # the same artifact with the gate off passes: the class gate alone failed it
    rc = main(["export", str(out), "--formats", "onnx", *loose, "--set", "gate.max_class_recall_drop=null"])
    assert rc == 0, capsys.readouterr().err
