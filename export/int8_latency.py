"""Why was int8 TFLite slower than fp32 here, and what fixes it: the measurement behind
benchmarks/results/int8_latency.md.

    python -m edgekd.export.int8_latency [--size 224] [--threads 1,2] [--rounds 30] [--out FILE.md]

Random-weight MobileNetV3-Small (seed 0) with BatchNorm statistics re-estimated on 64 real ELPV images
(random BN statistics shrink activations to ~1e-8 and make the int8 ADD scales unusable by XNNPACK, a
measurement artefact), calibrated on 64 other ELPV images. Converted with the export stage's own path
(torch -> ONNX -> onnx2tf -> TFLiteConverter), once with the activations as torchvision writes them
("naive") and once with export/graph.py's rewrites ("edgekd"). LiteRT interpreter, default op resolver
(XNNPACK delegate), batch 1, interleaved rounds so load on the machine hits every variant alike; CPU time
of the invoking thread is reported next to wall time for 1 thread (robust to other processes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgekd.export.context import ExportContext, captured_output, tf_quiet
from edgekd.export.runtimes import OnnxRunner, Runner, TfliteRunner, tflite_interpreter, tflite_ops
from edgekd.pipeline import machine


def _elpv_images(n: int, size: int, offset: int = 0) -> np.ndarray:
    import elpv_dataset

    from edgekd.pipeline import preprocess
    from edgekd.pipeline.config import IMAGENET_MEAN, IMAGENET_STD

    root = Path(elpv_dataset.__file__).parent / "data"
    files = sorted((root / "images").glob("*.png"))[offset : offset + n]
    x = np.concatenate(
        [preprocess.preprocess_rgb(preprocess.load_rgb(f), size, size, IMAGENET_MEAN, IMAGENET_STD) for f in files]
    )
    return x.astype(np.float32)


def _model(size: int, bn_images: np.ndarray):
    import torch
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(num_classes=4)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        m(torch.from_numpy(bn_images))
    return m.eval()


def delegation(content: bytes, threads: int = 1) -> dict:
    """XNNPACK partitions and the ops left to TFLite's own kernels (outside any delegate partition)."""
    it = tflite_interpreter(content, threads)
    ops = tflite_ops(it)
    dele = [o for o in ops if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops if o["op_name"] != "DELEGATE"]
    produced = {t for d in dele for t in d["outputs"]}
    consumed = {t for d in dele for t in d["inputs"]}
    outs = {d["index"] for d in it.get_output_details()}
    fallback = [
        o["op_name"]
        for o in plain
        if any(t in consumed or t in outs for t in o["outputs"]) and not any(t in produced for t in o["outputs"])
    ]
    return {
        "partitions": len(dele),
        "fallback_ops": dict(Counter(fallback)),
        "ops": dict(Counter(o["op_name"] for o in plain)),
    }


def _timed(runners: dict[str, Runner], x: dict[str, np.ndarray], rounds: int, per_round: int) -> tuple[dict, dict]:
    """Wall and thread-CPU milliseconds per `infer` (the runtime layer's timed call) on each runner's
    input prepared once, interleaved: `per_round` calls of each runner per round."""
    feeds = {name: r.prepare(x[name]) for name, r in runners.items()}
    for name, r in runners.items():
        for _ in range(5):
            r.infer(feeds[name])
    wall = {k: [] for k in runners}
    cpu = {k: [] for k in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            for _ in range(per_round):
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                r.infer(feeds[name])
                wall[name].append((time.perf_counter_ns() - w0) / 1e6)
                cpu[name].append((time.thread_time_ns() - c0) / 1e6)
    return wall, cpu


def bench(models: dict[str, bytes], threads: int, rounds: int, per_round: int = 5) -> dict[str, dict]:
    # every model here is a TF graph: NHWC input (a single layer's channel count need not be 1 or 3)
    runners = {name: TfliteRunner(content, threads, layout="NHWC") for name, content in models.items()}
    zeros = {}
    for name, r in runners.items():
        n, h, w, c = (int(v) for v in r.input_details["shape"])
        zeros[name] = np.zeros((n, c, h, w), np.float32)
    wall, cpu = _timed(runners, zeros, rounds, per_round)
    return {
        k: {
            "wall_p50": float(np.median(wall[k])),
            "wall_min": float(np.min(wall[k])),
            "cpu_p50": float(np.median(cpu[k])),
        }
        for k in wall
    }


def _context(model, calib: np.ndarray, size: int, work: Path, **options):
    """The export stage's context for the study's model (QAT off: the study measures graphs, not weights)."""
    return ExportContext(
        model=model,
        arch="mobilenet_v3_small",
        labels=list("abcd"),
        image_size=size,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        calib=calib,
        work=work,
        threads=1,
        source_sha256="-",
        options={"int8_qat": "off", **options},
    )


def onnx_variants(size: int, work: Path) -> dict[str, Path]:
    """The export stage's ONNX fp32 and QDQ int8 (uint8 and int8 activations) of the same model."""
    from edgekd.export import metadata as md
    from edgekd.export.formats import FORMATS
    from edgekd.export.to_onnx import onnx_graph, onnx_int8

    bn = _elpv_images(64, size, 0)
    calib = _elpv_images(64, size, 64)
    model = _model(size, bn)
    out = {}
    for act in ("uint8", "int8"):
        ctx = _context(model, calib, size, work / f"onnx-{act}", onnx_int8_activations=act, int8_max_float_layers=0)
        meta = md.model_json(
            spec=FORMATS["onnx-int8"],
            arch="x",
            labels=list("abcd"),
            height=size,
            width=size,
            mean=ctx.mean,
            std=ctx.std,
            source_sha256="-",
        )
        if act == "uint8":
            out["onnx fp32"] = onnx_graph(ctx)
        p = work / f"int8-{act}.onnx"
        onnx_int8(ctx, FORMATS["onnx-int8"], p, meta)
        out[f"onnx int8 QDQ ({'U8S8' if act == 'uint8' else 'S8S8'})"] = p
    return out


def bench_ort(models: dict[str, Path], threads: int, rounds: int, size: int, per_round: int = 5) -> dict[str, dict]:
    runners = {name: OnnxRunner(p, threads) for name, p in models.items()}
    zero = np.zeros((1, 3, size, size), np.float32)
    wall, cpu = _timed(runners, {name: zero for name in runners}, rounds, per_round)
    return {k: {"wall_p50": float(np.median(wall[k])), "cpu_p50": float(np.median(cpu[k]))} for k in wall}


def convert_all(size: int, work: Path) -> dict[str, bytes]:
    from edgekd.export.to_tflite import full_int8_settings, tflite_convert

    bn = _elpv_images(64, size, 0)
    calib = _elpv_images(64, size, 64)
    model = _model(size, bn)
    out = {}
    for variant in ("naive", "edgekd"):
        ctx = _context(model, calib, size, work / variant)
        rewrite = variant == "edgekd"  # naive: the activations as torchvision writes them
        out[f"{variant} fp32"] = tflite_convert(ctx, False, lambda c: None, rewrite=rewrite)
        out[f"{variant} int8"] = tflite_convert(ctx, True, full_int8_settings(ctx), rewrite=rewrite)
    return out


def kernels(threads: int, rounds: int) -> dict[str, dict]:
    """Single layers of MobileNetV3-Small's shapes, fp32 vs int8, through the same interpreter."""
    import tensorflow as tf

    from edgekd.export.to_tflite import full_int8_config

    layers = {
        "stem conv 3x3/2, 224x224x3 -> 16": ((224, 224, 3), lambda: tf.keras.layers.Conv2D(16, 3, 2, padding="same")),
        "depthwise 3x3, 56x56x72": ((56, 56, 72), lambda: tf.keras.layers.DepthwiseConv2D(3, 1, padding="same")),
        "pointwise 1x1, 28x28x96 -> 40": ((28, 28, 96), lambda: tf.keras.layers.Conv2D(40, 1)),
        "pointwise 1x1, 14x14x288 -> 576": ((14, 14, 288), lambda: tf.keras.layers.Conv2D(576, 1)),
    }
    models = {}
    for name, (shape, make) in layers.items():
        inp = tf.keras.Input(shape=shape, batch_size=1)
        m = tf.keras.Model(inp, tf.nn.relu(make()(inp)))
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        models[f"{name} fp32"] = c.convert()
        rng = np.random.default_rng(0)

        def rep(shape=shape, rng=rng):
            for _ in range(4):
                yield [rng.standard_normal((1,) + shape).astype(np.float32)]

        full_int8_config(rep, io="int8")(c)
        models[f"{name} int8"] = c.convert()
    return bench(models, threads, rounds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-kernels", action="store_true")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    a = ap.parse_args(argv)
    tf_quiet()
    lines = [
        f"machine: {machine.summary()}",
        f"command: python -m edgekd.export.int8_latency {' '.join(argv or sys.argv[1:])}",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp, captured_output():
        models = convert_all(a.size, Path(tmp))
        deleg = {k: delegation(v) for k, v in models.items()}
        results = {int(t): bench(models, int(t), a.rounds) for t in a.threads.split(",")}
        kern = None if a.no_kernels else kernels(1, a.rounds)
        onnx_res = None
        if not a.no_onnx:
            omodels = onnx_variants(a.size, Path(tmp))
            osizes = {k: p.stat().st_size for k, p in omodels.items()}
            onnx_res = bench_ort(omodels, 1, a.rounds, a.size)
    lines += [
        "| model | size | XNNPACK partitions | ops outside XNNPACK | "
        + " | ".join(f"{t} thr wall p50 (ms)" for t in results)
        + " | 1 thr CPU p50 (ms) |",
        "|---|---|---|---|" + "---|" * len(results) + "---|",
    ]
    for k, content in models.items():
        fb = ", ".join(f"{op} x{n}" for op, n in deleg[k]["fallback_ops"].items()) or "none"
        cols = " | ".join(f"{results[t][k]['wall_p50']:.2f}" for t in results)
        lines.append(
            f"| {k} | {len(content) / 1e6:.2f} MB | {deleg[k]['partitions']} | {fb} | {cols} | "
            f"{results[min(results)][k]['cpu_p50']:.2f} |"
        )
    if onnx_res:
        lines += [
            "",
            "| onnxruntime (1 thread, same model) | size | wall p50 (ms) | CPU p50 (ms) |",
            "|---|---|---|---|",
        ]
        for k, r in onnx_res.items():
            lines.append(f"| {k} | {osizes[k] / 1e6:.2f} MB | {r['wall_p50']:.2f} | {r['cpu_p50']:.2f} |")
    if kern:
        lines += [
            "",
            "| single layer (1 thread) | fp32 CPU p50 (ms) | int8 CPU p50 (ms) | int8/fp32 |",
            "|---|---|---|---|",
        ]
        for name in dict.fromkeys(k.rsplit(" ", 1)[0] for k in kern):
            f, i = kern[f"{name} fp32"]["cpu_p50"], kern[f"{name} int8"]["cpu_p50"]
            lines.append(f"| {name} | {f:.3f} | {i:.3f} | {i / f:.2f} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
