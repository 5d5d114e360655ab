"""Measuring: every subject once per thread profile, each time in a fresh worker process.

`run_worker` is the parent side of one measurement: start `python -m edgekd.benchmarks.worker`,
wait, read. The child gets the profile's CPU pinning and thread-count environment; a hung or
crashed child is a failed measurement with a one-line reason, never a hung benchmark.
`measure_subjects` runs the subjects (benchmarks/subjects.py) through it; the accuracy pass runs
in the first profile's process only (after its memory reading).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.benchmarks.subjects import inputs_for, rel_path
from edgekd.pipeline.progress import log
from edgekd.pipeline.rundir import RunDir, atomic_write_json

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in THREAD_ENV:
        env[k] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def run_worker(
    spec: dict,
    inputs: Path,
    out_json: Path,
    *,
    threads: int,
    cpus: Optional[list[int]] = None,
    min_queries: int = 100,
    min_seconds: float = 1.0,
    max_seconds: Optional[float] = None,
    warmup: int = 10,
    latency_images: int = 8,
    logits_out: Optional[Path] = None,
    accuracy_images: Optional[int] = None,
    latencies_out: Optional[Path] = None,
    timeout: Optional[float] = None,
) -> dict:
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
    cmd = [
        sys.executable,
        "-m",
        "edgekd.benchmarks.worker",
        "--spec",
        str(spec_file),
        "--inputs",
        str(inputs),
        "--threads",
        str(threads),
        "--min-queries",
        str(min_queries),
        "--min-seconds",
        str(min_seconds),
        "--max-seconds",
        str(max_seconds),
        "--warmup",
        str(warmup),
        "--latency-images",
        str(latency_images),
        "--out",
        str(raw_out),
    ]
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
        # same interpreter, environment and working directory: `edgekd` imports there as it does here
        proc = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True, timeout=timeout)
        if raw_out.exists():
            res = json.loads(raw_out.read_text())
        else:
            tail = (proc.stderr or "").strip().splitlines()
            res = {
                "status": "failed",
                "error": f"worker exited {proc.returncode} without a result" + (f": {tail[-1][:300]}" if tail else ""),
            }
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


# ----------------------------------------------------------------------------------------
# the subjects


def safe_name(name: str) -> str:
    """A name usable in a file name (bench/<name>@<profile>.json)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def accuracy(logits: np.ndarray, ev: dict, n: int) -> dict:
    """Accuracy and top-1 agreement with the evaluate stage's teacher and student on the first n test images."""
    pred = logits.argmax(1)
    out = {
        "accuracy": float((pred == ev["labels"][:n]).mean()) if n else None,
        "agreement_teacher": float((pred == ev["teacher"][:n].argmax(1)).mean()) if n else None,
        "agreement_student": float((pred == ev["student"][:n].argmax(1)).mean()) if n else None,
        "accuracy_images": n,
    }
    return out


def measure_subjects(
    subjects: list[dict],
    profiles: list[dict],
    *,
    run: RunDir,
    cfg,
    data,
    ev: dict,
    n_acc: int,
    bdir: Path,
    macs: dict,
    peaks: dict,
) -> list[dict]:
    """One entry per measured subject and profile (one per subject that cannot be measured); writes
    bench/<name>@<profile>.json (entry + raw worker result) and bench/<name>.logits.npy."""
    b = cfg.bench
    entries: list[dict] = []
    input_cache: dict = {}
    for s in subjects:
        if s.get("status") != "ok" or "spec" not in s:
            e = {k: v for k, v in s.items() if k not in ("spec", "reference", "model_input")}
            entries.append(e)
            log(f"bench: {s['name']}: {s['status']} ({s.get('reason')})")
            continue
        inputs = inputs_for(run, cfg, data, n_acc, s.get("model_input"), input_cache, bdir)
        acc: Optional[dict] = None
        for i, prof in enumerate(profiles):
            tag = f"{safe_name(s['name'])}@{safe_name(prof['profile'])}"
            logits_p = bdir / f"{safe_name(s['name'])}.logits.npy" if i == 0 else None
            res = run_worker(
                s["spec"],
                inputs,
                bdir / f"{tag}.json",
                threads=prof["threads"],
                cpus=prof["cpus"],
                min_queries=b.min_queries,
                min_seconds=b.min_seconds,
                warmup=b.warmup,
                logits_out=logits_p,
            )
            e = {k: v for k, v in s.items() if k not in ("spec", "reference", "model_input")}
            e.update(
                profile=prof["profile"],
                threads=prof["threads"],
                threads_requested=prof["threads_requested"],
                cpus=prof["cpus"],
                pinned=bool(res.get("pinned", False)),
                bench_json=rel_path(run, bdir / f"{tag}.json"),
            )
            if res.get("status") != "ok":
                e.update(status=res.get("status", "failed"), reason=res.get("error", "measurement failed"))
                log(f"bench: {s['name']} [{prof['profile']}]: {e['status']}: {e['reason']}")
            else:
                rt = res.get("runtime") or {}
                e.update(
                    runtime=rt.get("runtime", e["runtime"]),
                    runtime_version=rt.get("runtime_version"),
                    latency_ms=res["latency_ms"],
                    throughput_ips=res["throughput_ips"],
                    queries=res["queries"],
                    timed_seconds=res["timed_seconds"],
                    early_stop=res["early_stop"],
                    peak_rss_mb=res["peak_rss_mb"],
                    baseline_rss_mb=res["baseline_rss_mb"],
                    import_ms=res["import_ms"],
                    load_ms=res["load_ms"],
                    first_inference_ms=res["first_inference_ms"],
                )
                if logits_p is not None and logits_p.exists():
                    lg = np.load(logits_p)
                    n = int(lg.shape[0])
                    acc = accuracy(lg, ev, n)
                    ref = ev["teacher" if s["model"] == "teacher" else "student"][:n]
                    if lg.shape == ref.shape:
                        acc["max_abs_logit_diff_vs_pytorch"] = round(float(np.abs(lg - ref).max()), 6) if n else None
                if acc:
                    e.update(acc)
                m = macs.get(s["model"])
                e["macs"] = m
                peak = peaks.get(prof["profile"], {}).get("peak_gmacs_per_s")
                if m and peak:
                    e["compute_bound_ms"] = round(m / (peak * 1e9) * 1e3, 5)
                log(
                    f"bench: {s['name']} [{prof['profile']}, {prof['threads']} thr]: p50 "
                    f"{res['latency_ms']['p50']:.3f} ms, {res['throughput_ips']:.0f}/s, peak RSS "
                    f"{res['peak_rss_mb']:.0f} MB"
                    + (f", accuracy {acc['accuracy']:.1%}" if acc and acc.get("accuracy") is not None else "")
                )
            if (
                e["model"] == "teacher"
                and s["name"] == "teacher-onnx"
                and e.get("max_abs_logit_diff_vs_pytorch") is not None
            ):
                e["parity_status"] = (
                    "passed"
                    if e["max_abs_logit_diff_vs_pytorch"] <= 1e-3 and (e.get("agreement_teacher") or 0) == 1.0
                    else "failed"
                )
            atomic_write_json(bdir / f"{tag}.json", {"entry": e, "worker": res})
            entries.append(e)
    for p in input_cache.values():
        Path(p).unlink(missing_ok=True)
    return entries
