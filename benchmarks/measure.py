"""Parent side of one measurement: start `python -m benchmarks.worker` in a fresh process, wait, read.

The child gets the profile's CPU pinning and thread-count environment; a hung or crashed child
is a failed measurement with a one-line reason, never a hung benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in THREAD_ENV:
        env[k] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(spec: dict, inputs: Path, out_json: Path, *, threads: int, cpus: Optional[list[int]] = None,
               min_queries: int = 100, min_seconds: float = 1.0, max_seconds: Optional[float] = None,
               warmup: int = 10, latency_images: int = 8, logits_out: Optional[Path] = None,
               accuracy_images: Optional[int] = None, latencies_out: Optional[Path] = None,
               timeout: Optional[float] = None) -> dict:
    """Measure `spec` in a fresh subprocess; returns the worker's JSON (status ok|failed|timeout)."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    if max_seconds is None:
        max_seconds = max(10.0 * min_seconds, 120.0)
    if timeout is None:
        timeout = 300.0 + 2.0 * max_seconds + (600.0 if logits_out else 0.0)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=out_json.parent, delete=False) as f:
        json.dump(spec, f)
        spec_file = Path(f.name)
    raw_out = out_json.with_name(out_json.name + ".worker.json")
    raw_out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.worker", "--spec", str(spec_file), "--inputs", str(inputs),
           "--threads", str(threads), "--min-queries", str(min_queries), "--min-seconds", str(min_seconds),
           "--max-seconds", str(max_seconds), "--warmup", str(warmup), "--latency-images", str(latency_images),
           "--out", str(raw_out)]
    if cpus:
        cmd += ["--cpus", ",".join(str(c) for c in cpus)]
    if logits_out:
        cmd += ["--logits-out", str(logits_out)]
        if accuracy_images:
            cmd += ["--accuracy-images", str(accuracy_images)]
    if latencies_out:
        cmd += ["--latencies-out", str(latencies_out)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO_ROOT))
        if raw_out.exists():
            res = json.loads(raw_out.read_text())
        else:
            tail = (proc.stderr or "").strip().splitlines()
            res = {"status": "failed", "error": f"worker exited {proc.returncode} without a result"
                   + (f": {tail[-1][:300]}" if tail else "")}
        if proc.returncode != 0 and res.get("status") == "ok":
            res = {"status": "failed", "error": f"worker exited {proc.returncode}"}
        if res.get("status") != "ok" and proc.stderr:
            res["stderr_tail"] = proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        res = {"status": "timeout", "error": f"worker did not finish within {timeout:.0f} s"}
    finally:
        spec_file.unlink(missing_ok=True)
        raw_out.unlink(missing_ok=True)
    res["wall_seconds"] = round(time.time() - t0, 2)
    res["command"] = " ".join(cmd[1:3]) + " ..."
    return res
