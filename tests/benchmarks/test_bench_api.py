"""The bench stage end to end on a tiny real run: `edgekd bench RUN_DIR`."""

import json

import numpy as np
import pytest

from edgekd.benchmarks.schema import validate_report
from edgekd.cli import main

# ~30 s: fresh worker processes (two import torch); 1 thread keeps it fast on a busy machine
pytestmark = pytest.mark.slow


def test_bench_command_end_to_end(fake_run, capsys):
    assert main(["bench", str(fake_run), "--profile", "big-core", "--min-queries", "5", "--min-seconds", "0"]) == 0
    rep = json.loads((fake_run / "report.json").read_text())
    assert validate_report(rep) == [], validate_report(rep)
    # teacher: PyTorch and ONNX (exported here), both measured and in agreement with the evaluate stage
    tb = {e["name"]: e for e in rep["teacher_bench"]}
    assert set(tb) == {"teacher-pytorch", "teacher-onnx"}
    assert (fake_run / "bench" / "teacher.onnx").exists()
    for e in tb.values():
        assert e["status"] == "ok", e
        assert e["agreement_teacher"] == 1.0 and e["max_abs_logit_diff_vs_pytorch"] < 1e-3
        assert e["profile"] == "big-core" and e["threads_requested"] == 1 and e["threads"] == 1 and e["pinned"]
    assert tb["teacher-onnx"]["parity_status"] == "passed"
    # artifacts: the ONNX student measured; failed and needs-macOS ones listed with reasons
    arts = {e["name"]: e for e in rep["artifacts"]}
    onnx = arts["onnx"]
    assert onnx["status"] == "ok" and onnx["runtime"] == "onnxruntime"
    assert onnx["agreement_student"] == 1.0 and onnx["parity_status"] == "passed"
    assert onnx["latency_ms"]["p50"] > 0 and onnx["queries"] >= 5 and onnx["peak_rss_mb"] > 0
    assert onnx["size_bytes"] == (fake_run / "exports/onnx/model.onnx").stat().st_size
    labels = np.load(fake_run / "eval" / "logits.npz")["labels"]
    assert onnx["accuracy_images"] == len(labels)
    assert arts["onnx-int8"]["status"] == "failed" and "quantizer crashed" in arts["onnx-int8"]["reason"]
    # a CoreML file nobody could run (a manifest from before `unverified`: "needs macOS") is unverified, never ok
    assert arts["coreml"]["status"] == "unverified" and arts["coreml"]["parity_status"] == "needs macOS"
    assert arts["coreml"]["latency_ms"] is None
    assert rep["student_bench"][0]["agreement_student"] == 1.0
    # goals, machine, headline, per-measurement files, report
    goals = {g["name"]: g for g in rep["goals"]}
    assert set(goals) == {"speedup_same_runtime", "int8_size_ratio", "compute_bound_ratio", "tflite_vs_best_converter"}
    assert goals["speedup_same_runtime"]["value"] > 0 and "onnxruntime" in goals["speedup_same_runtime"]["detail"]
    assert goals["int8_size_ratio"]["status"] == "unknown"
    assert rep["bench_machine"]["profiles"][0]["threads_requested"] == 1
    assert rep["bench_machine"]["macs"]["student"] > 0
    assert rep["headline"].startswith("student fp32 ONNX:")
    assert (fake_run / "bench" / "onnx@big-core.json").exists()
    assert not list((fake_run / "bench").glob(".inputs*"))
    md = (fake_run / "report.md").read_text()
    assert rep["headline"] in md and "| onnx | student | onnx | fp32 | big-core |" in md
    assert "data:image/png;base64," in (fake_run / "report.html").read_text()
    assert "bench" in json.loads((fake_run / "stages.json").read_text())

    # the stage (as `edgekd run` calls it) does not measure again when nothing changed
    from edgekd.benchmarks.api import run_bench
    from edgekd.pipeline.rundir import RunDir

    mtime = (fake_run / "bench" / "onnx@big-core.json").stat().st_mtime
    run = RunDir(fake_run)
    again = run_bench(run, run.config())
    assert (fake_run / "bench" / "onnx@big-core.json").stat().st_mtime == mtime
    assert again["artifacts"] == rep["artifacts"]

    # --compare (against itself here) prints a table and writes a file
    capsys.readouterr()
    assert main(["bench", str(fake_run), "--compare", str(fake_run)]) == 0
    out = capsys.readouterr().out
    assert "| metric |" in out and "| onnx [big-core] |" in out
    assert list(fake_run.glob("compare-*.md"))


def test_bad_input_is_one_line_and_exit_2(fake_run, tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 2
    assert main(["bench", str(fake_run), "--profile", "phone"]) == 2
    err = capsys.readouterr().err
    assert "run directory not found" in err and "unknown bench profile 'phone'" in err
    (fake_run / "eval" / "logits.npz").unlink()
    assert main(["bench", str(fake_run), "--min-queries", "1"]) == 2
    assert "run the evaluate stage first" in capsys.readouterr().err


def test_inputs_follow_the_artifacts_model_json(fake_run, tmp_path):
    """An artifact whose model.json asks for other normalisation gets its own input tensor."""
    from edgekd.benchmarks.subjects import inputs_for
    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.rundir import RunDir

    run = RunDir(fake_run)
    cfg = run.config()
    data = load_split(run)
    cache: dict = {}
    default = np.load(inputs_for(run, cfg, data, 3, {"layout": "NCHW"}, cache, tmp_path))
    raw = np.load(inputs_for(run, cfg, data, 3, {"mean": [0, 0, 0], "std": [1, 1, 1], "scale": 1.0}, cache, tmp_path))
    assert default.shape == raw.shape == (3, 3, 32, 32) and len(cache) == 2
    mean = np.array(cfg.data.mean).reshape(1, 3, 1, 1)
    std = np.array(cfg.data.std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose((default * std + mean) * 255, raw, atol=1e-3)
    assert 0 <= raw.min() and raw.max() <= 255
