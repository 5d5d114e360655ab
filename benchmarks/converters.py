"""Converter comparison of a run's student: every TFLite float candidate, and onnxruntime's session options.

    python -m edgekd.benchmarks.converters RUN_DIR [--save-results converter-choice] [--rounds 100]

TFLite (fp32, fp16): the candidates the export stage chooses from (export/to_tflite.py FLOAT_CANDIDATES:
onnx2tf, litert-torch) plus `onnx2tf-2d-hardswish`, onnx2tf on the graph as it was before issue 16 (the
classifier's hard-swish on the 2-D tensor), to show what made that file slower. Each is checked with the
export's parity code on the run's test images, its ops counted, and all are timed interleaved with
export/candidates.py (the same timing as the export stage, more rounds). onnxruntime: the run's ONNX fp32
file with worker threads spinning or not, beside the shipped-style LiteRT fp32 file, interleaved too.

The run directory is only read. Writes benchmarks/results/<name>.{json,md} with the command, the machine and
its CPU flags.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.benchmarks.compare import RESULTS_DIR, write_results
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.machine import describe, summary
from edgekd.pipeline.progress import log


def _context(run, cfg, work: Path):
    from edgekd.export.context import ExportContext, calibration_images, export_options
    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.rundir import sha256_file
    from edgekd.pipeline.stages import eval_images, load_student

    data = load_split(run)
    labels = list(data.classes)
    model = load_student(cfg, run, len(labels))
    ctx = ExportContext.of_config(
        cfg,
        model=model,
        labels=labels,
        calib=calibration_images(data, cfg, cfg.export.calibration_images),
        work=work,
        threads=int(cfg.train.threads or 2),
        source_sha256=sha256_file(run.student_dir("student") / "model.safetensors"),
        options=export_options(cfg),
    )
    # the test images as the export's parity sees them: from the split's store into a memory-mapped scratch file
    x = eval_images(run, data, cfg, "test").array(scratch=work)
    return ctx, x, data.labels("test")


def _old_graph_onnx2tf(ctx, precision: str) -> bytes:
    """onnx2tf on the graph before issue 16: the classifier's hard-swish on the 2-D tensor (nn.Hardswish)."""
    import torch.nn as nn

    from edgekd.export import graph, to_tflite

    original = to_tflite.xnnpack_friendly

    def old(model, int8):
        g = original(model, int8)
        for mod in g.modules():
            for name, child in mod.named_children():
                if isinstance(child, graph.HardSwish4d):
                    setattr(mod, name, nn.Hardswish())
        return g

    # a context of its own: the SavedModel folders are named by precision, not by graph
    old_ctx = ctx.cache.get("old_graph_ctx")
    if old_ctx is None:
        old_ctx = copy.copy(ctx)
        old_ctx.work = ctx.work / "old-graph"
        old_ctx.work.mkdir(parents=True, exist_ok=True)
        old_ctx.cache = {}
        ctx.cache["old_graph_ctx"] = old_ctx
    to_tflite.xnnpack_friendly = old
    try:
        return to_tflite.onnx2tf_float(old_ctx, precision)
    finally:
        to_tflite.xnnpack_friendly = original


def tflite_study(ctx, x, y, rounds: int, runs: int) -> list[dict]:
    import torch

    from edgekd.export import candidates, to_tflite
    from edgekd.export.formats import FORMATS, gate_for
    from edgekd.export.parity import apply_gate, parity_metrics
    from edgekd.export.runtimes import TfliteRunner

    with torch.inference_mode():
        ref = ctx.torch_logits(x)
    out = []
    for precision, spec in (("fp32", FORMATS["tflite"]), ("fp16", FORMATS["tflite-fp16"])):
        builders = {n: b for n, (b, _, _) in to_tflite.FLOAT_CANDIDATES.items()}
        builders["onnx2tf-2d-hardswish"] = _old_graph_onnx2tf
        built, rows = {}, []
        for name, build in builders.items():
            t0 = time.time()
            row: dict = {"converter": name, "precision": precision}
            try:
                built[name] = build(ctx, precision)
            except Exception as e:  # a converter that fails is a row, not the end of the study
                row.update(status="failed", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                rows.append(row)
                continue
            par = parity_metrics(ref, TfliteRunner(built[name], ctx.threads)(x), y)
            status, why = apply_gate(par, gate_for(spec))
            row.update(
                status=status,
                failed=why or None,
                convert_seconds=round(time.time() - t0, 1),
                size_bytes=len(built[name]),
                agreement=par["agreement"],
                max_abs=par["max_abs"],
                ops=candidates.op_counts(built[name]),
            )
            rows.append(row)
            log(f"converters: {precision} {name}: built, parity {status}")
        timing = candidates.interleaved_latency(built, x[:1], ctx.threads, rounds=rounds, runs=runs)
        for row in rows:
            if row["converter"] in timing:
                row["latency"] = timing[row["converter"]]
        best = min((r for r in rows if r.get("latency")), key=lambda r: r["latency"]["median_ms"])
        for row in rows:
            if row.get("latency"):
                row["over_best"] = round(row["latency"]["median_ms"] / best["latency"]["median_ms"], 3)
        out += rows
    return out


def onnx_study(run, ctx, x, rounds: int, runs: int, tflite: Optional[bytes]) -> list[dict]:
    """ORT fp32 (spinning worker threads or not, 1 and N threads) beside LiteRT fp32, interleaved."""
    from edgekd.export.runtimes import OnnxRunner, TfliteRunner

    onnx_path = run.path("exports", "onnx", "model.onnx")
    if not onnx_path.exists():
        return []
    runners = {}
    for t in sorted({1, ctx.threads}):
        runners[f"onnxruntime spin {t}t"] = OnnxRunner(onnx_path, t, session_config={})
        runners[f"onnxruntime no-spin {t}t"] = OnnxRunner(
            onnx_path, t, session_config={"session.intra_op.allow_spinning": "0"}
        )
        if tflite is not None:
            runners[f"litert {t}t"] = TfliteRunner(tflite, t)
    feeds = {n: r.prepare(x[:1]) for n, r in runners.items()}
    for n, r in runners.items():
        for _ in range(20):
            r.infer(feeds[n])
    per: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for i in range(rounds):
        for n in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter_ns()
            for _ in range(runs):
                runners[n].infer(feeds[n])
            per[n].append((time.perf_counter_ns() - t0) / runs / 1e6)
    return [
        {"setting": n, "median_ms": round(float(np.median(v)), 4), "rounds": rounds, "runs": runs}
        for n, v in per.items()
    ]


def render_markdown(doc: dict) -> str:
    lines = [
        "# Converter comparison",
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['date']}  ",
        f"Machine: {doc['machine']}  ",
        f"CPU flags: {' '.join(doc['cpu_flags']) or 'none of those that matter'}  ",
        f"Run: {doc['run']} ({doc['arch']}, {doc['image_size']} px, {doc['test_images']} test images)",
        "",
        "Latency: LiteRT interpreter + XNNPACK, batch 1, median of interleaved rounds (export/candidates.py "
        f"interleaved_latency, {doc['rounds']} rounds x {doc['runs']} runs, {doc['threads']} thread(s)). The machine "
        "is shared, so absolute times are noisy; the ratios within one table are what this file is for.",
        "",
        "## TFLite candidates",
        "",
        "| precision | converter | parity | agreement | max abs | median ms | vs best | size MB | ops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["tflite"]:
        lat = r.get("latency") or {}
        ops = ", ".join(f"{k} {v}" for k, v in sorted((r.get("ops") or {}).items()))
        lines.append(
            f"| {r['precision']} | {r['converter']} | {r['status']} | {r.get('agreement', 0) * 100:.2f}% | "
            f"{r.get('max_abs', 0):.2e} | {lat.get('median_ms', float('nan')):.3f} | {r.get('over_best', 0):.3f}x | "
            f"{(r.get('size_bytes') or 0) / 1e6:.2f} | {ops} |"
        )
    lines += ["", "## onnxruntime session options vs LiteRT (fp32)", ""]
    if doc["onnx"]:
        lines += ["| setting | median ms |", "|---|---|"]
        lines += [f"| {r['setting']} | {r['median_ms']:.3f} |" for r in doc["onnx"]]
    else:
        lines.append("No ONNX fp32 artifact in the run.")
    if doc.get("findings"):
        lines += ["", "## Findings", ""] + [f"- {f}" for f in doc["findings"]]
    return "\n".join(lines) + "\n"


def findings(doc: dict) -> list[str]:
    """Plain sentences computed from the figures (no typed numbers)."""
    out = []
    by = {(r["precision"], r["converter"]): r for r in doc["tflite"] if r.get("latency")}
    for p in ("fp32", "fp16"):
        old, new = by.get((p, "onnx2tf-2d-hardswish")), by.get((p, "onnx2tf"))
        if old and new:
            keys = sorted(k for k in set(old["ops"]) | set(new["ops"]) if old["ops"].get(k) != new["ops"].get(k))
            was = {k: old["ops"].get(k, 0) for k in keys}
            now = {k: new["ops"].get(k, 0) for k in keys}
            out.append(
                f"{p}: onnx2tf with the classifier's hard-swish on the 2-D tensor has ops {was} where the fixed "
                f"graph has {now}; {old['latency']['median_ms'] / new['latency']['median_ms']:.3f}x the fixed "
                "graph's latency"
            )
        lt = by.get((p, "litert-torch"))
        if lt and new:
            out.append(
                f"{p}: onnx2tf (fixed graph) / litert-torch = "
                f"{new['latency']['median_ms'] / lt['latency']['median_ms']:.3f}x"
            )
    o = {r["setting"]: r["median_ms"] for r in doc["onnx"]}
    for t in sorted({1, doc["threads"]}):
        s, ns, lr = o.get(f"onnxruntime spin {t}t"), o.get(f"onnxruntime no-spin {t}t"), o.get(f"litert {t}t")
        if s and ns and lr:
            out.append(
                f"{t} thread(s): onnxruntime spinning / not spinning = {s / ns:.2f}x; onnxruntime (not spinning) / "
                f"LiteRT = {ns / lr:.2f}x"
            )
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.converters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--save-results", metavar="NAME", help="write benchmarks/results/NAME.{json,md}")
    ap.add_argument("--rounds", type=int, default=100, help="interleaved timing rounds (default %(default)s)")
    ap.add_argument("--runs", type=int, default=20, help="runs per candidate and round (default %(default)s)")
    a = ap.parse_args(argv)
    from edgekd.pipeline.rundir import RunDir

    try:
        if a.save_results and not re.fullmatch(r"[\w.-]+", a.save_results):
            raise EdgekdError(f"--save-results name {a.save_results!r}: use letters, digits, '.', '_' or '-'")
        if not (a.run_dir / "student" / "model.safetensors").exists():
            raise EdgekdError(f"{a.run_dir} has no trained student: run `edgekd run --out {a.run_dir}` first")
        import tempfile

        run = RunDir(a.run_dir)
        cfg = run.config()
        with tempfile.TemporaryDirectory(prefix="edgekd-converters-") as work:
            ctx, x, y = _context(run, cfg, Path(work))
            tfl = tflite_study(ctx, x, y, a.rounds, a.runs)
            from edgekd.export.to_tflite import litert_torch_float

            fp32 = ctx.cache.get("litert_torch_fp32") or litert_torch_float(ctx, "fp32")
            onnx = onnx_study(run, ctx, x, a.rounds, a.runs, fp32)
    except EdgekdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = sys.argv[1:] if argv is None else argv
    d = describe()
    doc = {
        "command": " ".join(["python -m edgekd.benchmarks.converters", *args]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": summary(d),
        "cpu_flags": d["cpu_flags"],
        "run": str(a.run_dir),
        "arch": cfg.student.arch,
        "image_size": cfg.data.image_size,
        "test_images": int(len(x)),
        "threads": ctx.threads,
        "rounds": a.rounds,
        "runs": a.runs,
        "tflite": tfl,
        "onnx": onnx,
    }
    doc["findings"] = findings(doc)
    text = render_markdown(doc)
    print(text)
    if a.save_results:
        write_results(RESULTS_DIR / a.save_results, doc, text)
        log(f"converters: {RESULTS_DIR / a.save_results}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
