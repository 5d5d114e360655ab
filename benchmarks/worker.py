"""One measurement in a fresh process: `python -m edgekd.benchmarks.worker --spec JSON --threads N --out OUT.json`.

Order (MLPerf single-stream style): pin CPUs -> load a few inputs -> import the runtime
(import_ms) -> create the session (load_ms) -> first inference (first_inference_ms) -> warm-up
-> batch-1 queries, each issued when the previous one finished, until at least `min_queries`
AND `min_seconds` (stopping early only at `max_seconds`) -> peak RSS (VmHWM) -> optional
accuracy pass over all inputs (after the memory reading, so the test set does not count).

Runs the artifact through THE runtime layer (edgekd.export.runtimes: prepare / infer / postprocess,
only `infer` is timed). Imports stay minimal (no torch unless the runner is PyTorch) so the peak RSS
is the runtime's.
Writes a JSON document; on error {"status": "failed", "error": ...} and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb() -> tuple[float, str]:
    """(peak resident set size in MiB, where it was read from)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0, "/proc/self/status VmHWM"
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return (r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0), "getrusage ru_maxrss"


def pin(cpus: list[int] | None) -> tuple[list[int] | None, bool]:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, set(cpus))
            return sorted(os.sched_getaffinity(0)), True
        except OSError:
            pass
    cur = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return cur, False


def spec_from_args(args: argparse.Namespace) -> dict:
    """--spec (JSON text or file) wins; else --artifact PATH: kind from the suffix, layout from a model.json
    beside it (read as plain JSON: edgekd.export.manifest.read_model_json would import torch into the worker)."""
    if args.spec:
        return json.loads(args.spec) if args.spec.lstrip().startswith("{") else json.loads(Path(args.spec).read_text())
    if not args.artifact:
        raise ValueError("give --artifact PATH or --spec JSON")
    from edgekd.export.runtimes import KIND_BY_SUFFIX

    p = Path(args.artifact)
    kind = KIND_BY_SUFFIX.get(p.suffix)
    if kind is None:
        raise ValueError(f"cannot tell the runtime of {p.name}; use --spec")
    spec = {"kind": kind, "path": str(p)}  # a .pt is taken as TorchScript
    mj = p.parent / "model.json"
    if mj.exists():
        spec["layout"] = (json.loads(mj.read_text()).get("input") or {}).get("layout")
    return spec


def measure(args: argparse.Namespace) -> dict:
    from edgekd.benchmarks.stats import rounded, summarize

    cpus, pinned = pin([int(c) for c in args.cpus.split(",")] if args.cpus else None)
    res: dict = {"status": "ok", "pid": os.getpid(), "threads": args.threads, "cpus": cpus, "pinned": pinned}
    spec = spec_from_args(args)
    res["spec"] = spec

    import numpy as np

    inputs = np.load(args.inputs, mmap_mode="r")
    n_lat = max(1, min(args.latency_images, len(inputs)))
    lat_x = [np.array(inputs[i : i + 1], dtype=np.float32) for i in range(n_lat)]
    res["baseline_rss_mb"] = round(rss_mb() or 0.0, 2)

    from edgekd.export import runtimes  # numpy only: each runner imports its own runtime

    t0 = time.perf_counter()
    if spec["kind"] == "onnx":
        import onnxruntime  # noqa: F401
    elif spec["kind"] == "tflite":
        import ai_edge_litert.interpreter  # noqa: F401
    elif spec["kind"] == "torch":
        import torch  # noqa: F401

        if spec.get("builder", "torchscript") != "torchscript":
            import edgekd.pipeline.models  # noqa: F401  (torchvision and the model builders)
    res["import_ms"] = round((time.perf_counter() - t0) * 1e3, 3)

    t0 = time.perf_counter()
    runner = runtimes.make_runner(spec, args.threads)
    res["load_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    res["runtime"] = runner.info

    feeds = [runner.prepare(x) for x in lat_x]
    t0 = time.perf_counter()
    out = runner.infer(feeds[0])
    res["first_inference_ms"] = round((time.perf_counter() - t0) * 1e3, 4)
    res["output_shape"] = list(np.shape(runner.postprocess(out)))

    for i in range(args.warmup):
        runner.infer(feeds[i % n_lat])

    lat: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    min_ns, max_ns = int(args.min_seconds * 1e9), int(args.max_seconds * 1e9)
    i = 0
    while True:
        t = clock()
        runner.infer(feeds[i % n_lat])
        done = clock()
        lat.append((done - t) / 1e6)
        i += 1
        elapsed = done - start
        if (i >= args.min_queries and elapsed >= min_ns) or elapsed >= max_ns:
            break
    wall = (clock() - start) / 1e9
    res["queries"] = len(lat)
    res["timed_seconds"] = round(wall, 4)
    res["early_stop"] = len(lat) < args.min_queries or wall < args.min_seconds
    res["latency_ms"] = rounded(summarize(lat))
    res["throughput_ips"] = round(len(lat) / wall, 3) if wall > 0 else None
    peak, source = peak_rss_mb()
    res["peak_rss_mb"] = round(peak, 2)
    res["rss_source"] = source
    res["rss_after_mb"] = round(rss_mb() or 0.0, 2)
    if args.latencies_out:
        np.save(args.latencies_out, np.asarray(lat, dtype=np.float64))

    if args.logits_out:
        n = len(inputs) if args.accuracy_images is None else min(args.accuracy_images, len(inputs))
        t0 = time.perf_counter()
        logits = [runner(np.array(inputs[j : j + 1], dtype=np.float32)) for j in range(n)]
        arr = np.concatenate(logits, axis=0) if logits else np.zeros((0, 0), np.float32)
        np.save(args.logits_out, arr)
        res["accuracy_images"] = n
        res["accuracy_seconds"] = round(time.perf_counter() - t0, 3)
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m edgekd.benchmarks.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="model file (.onnx, .tflite, .mlpackage, TorchScript .pt)")
    ap.add_argument(
        "--spec",
        help="runner spec instead of --artifact: JSON text or a .json file (kind, path, layout, torch builder fields)",
    )
    ap.add_argument("--inputs", required=True, help=".npy of normalised NCHW float32 images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="", help="comma-separated CPU ids to pin to (sched_setaffinity)")
    ap.add_argument("--min-queries", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--latency-images", type=int, default=8, help="distinct inputs cycled by the timed queries")
    ap.add_argument("--accuracy-images", type=int, default=None)
    ap.add_argument("--logits-out", default="", help=".npy for logits of every input (accuracy pass)")
    ap.add_argument("--latencies-out", default="", help=".npy for the raw per-query latencies (ms)")
    ap.add_argument("--out", required=True, help="result JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        res = measure(args)
        code = 0
    except Exception as e:  # report, never hang the parent
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        res = {
            "status": "failed",
            "error": f"{type(e).__name__}: {msg}"[:500],
            "traceback": traceback.format_exc()[-4000:],
        }
        code = 1
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
