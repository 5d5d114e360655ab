"""Converter choice by measurement: several converters' files for one artifact, the fastest that passes ships.

For a TFLite fp32/fp16 artifact the stack offers more than one converter (onnx2tf from the ONNX graph,
litert-torch straight from PyTorch; export/to_tflite.py builds them). Each candidate is

    built          its converter's flatbuffer (a converter error is a failed candidate with a reason)
    checked        the same parity code as the shipped artifact (export/parity.py, the artifact's gate)
    timed          batch-1 runs through THE runtime layer (export/runtimes.py TfliteRunner), interleaved:
                   round r runs every candidate `runs` times, in alternating order, so that a noisy shared
                   machine slows all of them alike; a candidate's latency is the median of its rounds

and `choose` ships the fastest candidate that passed. The manifest entry's `details.candidates` and
`details.choice` record every candidate (latency, parity, size, op counts) and why one was chosen; the
bench report's reference row (benchmarks/report.py) compares the shipped file with the best candidate.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from edgekd.export.runtimes import TfliteRunner, tflite_interpreter, tflite_ops


def op_counts(content: bytes) -> dict[str, int]:
    """Ops by type of a .tflite flatbuffer (builtin kernels, before delegation)."""
    it = tflite_interpreter(content, 1, delegates=False)
    return dict(Counter(o["op_name"] for o in tflite_ops(it)))


def interleaved_latency(
    contents: dict[str, bytes],
    x: np.ndarray,
    threads: int,
    rounds: int = 40,
    runs: int = 20,
    warmup: int = 20,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, dict]:
    """{name: {median_ms, p25_ms, p75_ms, rounds, runs_per_round, threads}}: batch-1 latency of each flatbuffer,
    from `rounds` interleaved rounds of `runs` back-to-back invocations (first image of `x`, NCHW normalised)."""
    runners = {n: TfliteRunner(b, threads) for n, b in contents.items()}
    feeds = {n: r.prepare(np.ascontiguousarray(x[:1], dtype=np.float32)) for n, r in runners.items()}
    for n, r in runners.items():
        for _ in range(warmup):
            r.infer(feeds[n])
    per: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for i in range(rounds):
        for n in names if i % 2 == 0 else names[::-1]:
            r, f = runners[n], feeds[n]
            t0 = clock()
            for _ in range(runs):
                r.infer(f)
            per[n].append((clock() - t0) / runs / 1e6)
    return {
        n: {
            "median_ms": round(float(np.median(v)), 5),
            "p25_ms": round(float(np.percentile(v, 25)), 5),
            "p75_ms": round(float(np.percentile(v, 75)), 5),
            "rounds": rounds,
            "runs_per_round": runs,
            "threads": int(threads),
        }
        for n, v in per.items()
    }


def choose(candidates: list[dict]) -> dict:
    """The choice among candidate records ({converter, status: passed|failed, latency_ms, reason}): the fastest
    that passed parity; with one passing candidate, that one (no timing needed). Returns {chosen, why, best_ms,
    fastest_built, fastest_built_ms, shipped_over_fastest}; chosen None when none passed."""
    passed = [c for c in candidates if c.get("status") == "passed"]
    timed = [c for c in candidates if c.get("latency_ms") is not None]
    fastest = min(timed, key=lambda c: c["latency_ms"]) if timed else None
    out: dict[str, Any] = {
        "chosen": None,
        "why": None,
        "best_ms": None,
        "fastest_built": fastest["converter"] if fastest else None,
        "fastest_built_ms": fastest["latency_ms"] if fastest else None,
        "shipped_over_fastest": None,
    }
    failed = [f"{c['converter']} ({c.get('reason') or 'failed'})" for c in candidates if c.get("status") != "passed"]
    if not passed:
        out["why"] = "no candidate passed: " + "; ".join(failed)
        return out
    timed_passed = [c for c in passed if c.get("latency_ms") is not None]
    if len(timed_passed) < len(passed) or not timed_passed:
        best = passed[0]
        out["why"] = f"{best['converter']}: the only candidate that passed parity" + (
            f" (not shipped: {'; '.join(failed)})" if failed else ""
        )
    else:
        best = min(timed_passed, key=lambda c: c["latency_ms"])
        others = [
            f"{c['converter']} {c['latency_ms']:.3f} ms ({c['latency_ms'] / best['latency_ms']:.2f}x)"
            for c in timed_passed
            if c is not best
        ]
        out["why"] = (
            f"{best['converter']}: fastest of {len(timed_passed)} candidate(s) that passed parity, median "
            f"{best['latency_ms']:.3f} ms" + (f"; {', '.join(others)}" if others else "")
        )
        if failed:
            out["why"] += f"; not shipped: {'; '.join(failed)}"
    out["chosen"] = best["converter"]
    out["best_ms"] = best.get("latency_ms")
    if fastest and best.get("latency_ms") is not None:
        out["shipped_over_fastest"] = round(best["latency_ms"] / fastest["latency_ms"], 4)
    return out


def parity_summary(par: Optional[dict]) -> Optional[dict]:
    """The figures of a parity record worth keeping per candidate."""
    if not par:
        return None
    keys = ("status", "images", "agreement", "max_abs", "cosine", "accuracy_drop_points", "failed", "on")
    return {k: par[k] for k in keys if k in par}
