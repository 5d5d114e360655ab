"""The measurement subprocess on a tiny ONNX model (and a TorchScript one)."""

import json

import numpy as np

from edgekd.benchmarks.measure import run_worker
from edgekd.benchmarks.stats import LATENCY_KEYS


def test_onnx_worker_measures_in_a_fresh_process(tiny_onnx, tmp_path):
    import os

    import onnxruntime as ort

    onnx, x = tiny_onnx
    out = tmp_path / "m.json"
    res = run_worker(
        {"kind": "onnx", "path": str(onnx)},
        x,
        out,
        threads=1,
        cpus=[os.sched_getaffinity(0).pop()],
        min_queries=30,
        min_seconds=0.05,
        warmup=2,
        logits_out=tmp_path / "l.npy",
        timeout=120,
    )
    assert res["status"] == "ok", res
    assert res["pid"] != os.getpid()
    assert res["queries"] >= 30 and res["timed_seconds"] >= 0.05 and not res["early_stop"]
    lat = res["latency_ms"]
    assert tuple(lat) == LATENCY_KEYS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert res["throughput_ips"] > 0 and res["load_ms"] > 0 and res["first_inference_ms"] > 0
    assert res["peak_rss_mb"] >= res["baseline_rss_mb"] > 0
    assert res["pinned"] is True and len(res["cpus"]) == 1
    assert res["runtime"]["runtime"] == "onnxruntime" and res["output_shape"] == [1, 4]
    assert "torch" not in json.dumps(res["runtime"])
    logits = np.load(tmp_path / "l.npy")
    ref = ort.InferenceSession(str(onnx)).run(None, {"input": np.load(x)})[0]
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


def test_worker_reports_failure_instead_of_raising(tiny_onnx, tmp_path):
    _, x = tiny_onnx
    res = run_worker(
        {"kind": "onnx", "path": str(tmp_path / "missing.onnx")},
        x,
        tmp_path / "m.json",
        threads=1,
        min_queries=1,
        min_seconds=0,
        warmup=0,
        timeout=60,
    )
    assert res["status"] == "failed" and "missing.onnx" in res["error"]


def test_worker_timeout_is_a_result(tiny_onnx, tmp_path):
    onnx, x = tiny_onnx
    res = run_worker(
        {"kind": "onnx", "path": str(onnx)},
        x,
        tmp_path / "m.json",
        threads=1,
        min_queries=1,
        min_seconds=60,
        max_seconds=60,
        warmup=0,
        timeout=2,
    )
    assert res["status"] == "timeout"


def test_torchscript_runner(tiny_torchscript, tmp_path):
    path, x, ref = tiny_torchscript
    res = run_worker(
        {"kind": "torch", "path": str(path)},
        x,
        tmp_path / "m.json",
        threads=1,
        min_queries=5,
        min_seconds=0,
        warmup=1,
        logits_out=tmp_path / "l.npy",
        timeout=120,
    )
    assert res["status"] == "ok", res
    assert res["runtime"]["runtime"] == "pytorch" and res["runtime"]["num_threads"] == 1
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), ref, rtol=1e-5, atol=1e-5)


def test_worker_command_line_with_artifact(tiny_onnx, tmp_path):
    import subprocess
    import sys

    from edgekd.benchmarks.measure import worker_env

    onnx, x = tiny_onnx
    out = tmp_path / "w.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgekd.benchmarks.worker",
            "--artifact",
            str(onnx),
            "--inputs",
            str(x),
            "--threads",
            "1",
            "--min-queries",
            "3",
            "--min-seconds",
            "0",
            "--warmup",
            "0",
            "--out",
            str(out),
        ],
        env=worker_env(1),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["status"] == "ok" and res["spec"]["kind"] == "onnx" and res["queries"] >= 3
