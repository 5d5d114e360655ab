"""Why was int8 TFLite slower than fp32 here, and what fixes it: the measurement behind
benchmarks/results/int8_latency.md.

    python -m export.int8_latency [--size 224] [--threads 1,2] [--rounds 30] [--out FILE.md]

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
import contextlib
import copy
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def _elpv_images(n: int, size: int, offset: int = 0) -> np.ndarray:
    import elpv_dataset

    from pipeline import preprocess
    from pipeline.config import IMAGENET_MEAN, IMAGENET_STD

    root = Path(elpv_dataset.__file__).parent / "data"
    files = sorted((root / "images").glob("*.png"))[offset: offset + n]
    x = np.concatenate([preprocess.preprocess_rgb(preprocess.load_rgb(f), size, size, IMAGENET_MEAN, IMAGENET_STD)
                        for f in files])
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
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=threads)
    it.allocate_tensors()
    ops = it._get_ops_details()
    dele = [o for o in ops if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops if o["op_name"] != "DELEGATE"]
    produced = {t for d in dele for t in d["outputs"]}
    consumed = {t for d in dele for t in d["inputs"]}
    outs = {d["index"] for d in it.get_output_details()}
    fallback = [o["op_name"] for o in plain
                if any(t in consumed or t in outs for t in o["outputs"]) and not any(t in produced for t in o["outputs"])]
    return {"partitions": len(dele), "fallback_ops": dict(Counter(fallback)),
            "ops": dict(Counter(o["op_name"] for o in plain))}


def bench(models: dict[str, bytes], threads: int, rounds: int, per_round: int = 5) -> dict[str, dict]:
    from ai_edge_litert.interpreter import Interpreter

    its = {}
    for name, content in models.items():
        it = Interpreter(model_content=content, num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(5):
            it.invoke()
        its[name] = it
    wall = {k: [] for k in its}
    cpu = {k: [] for k in its}
    for _ in range(rounds):
        for name, it in its.items():
            for _ in range(per_round):
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                it.invoke()
                wall[name].append((time.perf_counter_ns() - w0) / 1e6)
                cpu[name].append((time.thread_time_ns() - c0) / 1e6)
    return {k: {"wall_p50": float(np.median(wall[k])), "wall_min": float(np.min(wall[k])),
                "cpu_p50": float(np.median(cpu[k]))} for k in its}


def _context(model, calib: np.ndarray, size: int, work: Path, **options):
    """The export stage's context for the study's model (QAT off: the study measures graphs, not weights)."""
    import export.converters as conv

    return conv.ExportContext(model=model, arch="mobilenet_v3_small", labels=list("abcd"), image_size=size,
                              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), calib=calib, work=work,
                              threads=1, source_sha256="-", options={"int8_qat": "off", **options})


def onnx_variants(size: int, work: Path) -> dict[str, Path]:
    """The export stage's ONNX fp32 and QDQ int8 (uint8 and int8 activations) of the same model."""
    import export.converters as conv
    from export import metadata as md
    from export.formats import FORMATS

    bn = _elpv_images(64, size, 0)
    calib = _elpv_images(64, size, 64)
    model = _model(size, bn)
    out = {}
    for act in ("uint8", "int8"):
        ctx = _context(model, calib, size, work / f"onnx-{act}", onnx_int8_activations=act,
                       int8_max_float_layers=0)
        meta = md.model_json(spec=FORMATS["onnx-int8"], arch="x", labels=list("abcd"), height=size, width=size,
                             mean=ctx.mean, std=ctx.std, source_sha256="-")
        if act == "uint8":
            out["onnx fp32"] = ctx.onnx_fp32()
        p = work / f"int8-{act}.onnx"
        conv.onnx_int8(ctx, FORMATS["onnx-int8"], p, meta)
        out[f"onnx int8 QDQ ({'U8S8' if act == 'uint8' else 'S8S8'})"] = p
    return out


def bench_ort(models: dict[str, Path], threads: int, rounds: int, size: int, per_round: int = 5) -> dict[str, dict]:
    import onnxruntime as ort

    sessions = {}
    for name, p in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sessions[name] = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    x = {"input": np.zeros((1, 3, size, size), np.float32)}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, x)
    wall = {k: [] for k in sessions}
    cpu = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(per_round):
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                s.run(None, x)
                wall[name].append((time.perf_counter_ns() - w0) / 1e6)
                cpu[name].append((time.thread_time_ns() - c0) / 1e6)
    return {k: {"wall_p50": float(np.median(wall[k])), "cpu_p50": float(np.median(cpu[k]))} for k in sessions}


def convert_all(size: int, work: Path) -> dict[str, bytes]:
    import export.converters as conv

    bn = _elpv_images(64, size, 0)
    calib = _elpv_images(64, size, 64)
    model = _model(size, bn)
    out = {}
    for variant in ("naive", "edgekd"):
        ctx = _context(model, calib, size, work / variant)
        patch = contextlib.nullcontext()
        if variant == "naive":
            patch = _patched(conv, "xnnpack_friendly", lambda m, int8: copy.deepcopy(m).eval())
        int8 = conv.full_int8_settings(ctx)
        with patch:
            out[f"{variant} fp32"] = conv._tflite_convert(ctx, False, lambda c: None)
            out[f"{variant} int8"] = conv._tflite_convert(ctx, True, int8)
    return out


@contextlib.contextmanager
def _patched(mod, name, value):
    old = getattr(mod, name)
    setattr(mod, name, value)
    try:
        yield
    finally:
        setattr(mod, name, old)


def kernels(threads: int, rounds: int) -> dict[str, dict]:
    """Single layers of MobileNetV3-Small's shapes, fp32 vs int8, through the same interpreter."""
    import tensorflow as tf

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

        def rep(shape=shape):
            for _ in range(4):
                yield [rng.standard_normal((1,) + shape).astype(np.float32)]
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = rep
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
        models[f"{name} int8"] = c.convert()
    return bench(models, threads, rounds)


def machine() -> str:
    cpu = platform.processor()
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in have)
                break
    import os

    from importlib import metadata as im

    return (f"{cpu} ({os.cpu_count()} cores; SIMD: {flags or '?'}), {platform.platform()}, Python "
            f"{platform.python_version()}, ai-edge-litert {im.version('ai-edge-litert')}, tensorflow "
            f"{im.version('tensorflow')}, onnx2tf {im.version('onnx2tf')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-kernels", action="store_true")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    a = ap.parse_args(argv)
    from export.converters import _tf_quiet

    _tf_quiet()
    lines = [f"machine: {machine()}", f"command: python -m export.int8_latency {' '.join(argv or sys.argv[1:])}", ""]
    with tempfile.TemporaryDirectory() as tmp, _silence():
        models = convert_all(a.size, Path(tmp))
        deleg = {k: delegation(v) for k, v in models.items()}
        results = {int(t): bench(models, int(t), a.rounds) for t in a.threads.split(",")}
        kern = None if a.no_kernels else kernels(1, a.rounds)
        onnx_res = None
        if not a.no_onnx:
            omodels = onnx_variants(a.size, Path(tmp))
            osizes = {k: p.stat().st_size for k, p in omodels.items()}
            onnx_res = bench_ort(omodels, 1, a.rounds, a.size)
    lines += ["| model | size | XNNPACK partitions | ops outside XNNPACK | " +
              " | ".join(f"{t} thr wall p50 (ms)" for t in results) + " | 1 thr CPU p50 (ms) |",
              "|---|---|---|---|" + "---|" * len(results) + "---|"]
    for k, content in models.items():
        fb = ", ".join(f"{op} x{n}" for op, n in deleg[k]["fallback_ops"].items()) or "none"
        cols = " | ".join(f"{results[t][k]['wall_p50']:.2f}" for t in results)
        lines.append(f"| {k} | {len(content) / 1e6:.2f} MB | {deleg[k]['partitions']} | {fb} | {cols} | "
                     f"{results[min(results)][k]['cpu_p50']:.2f} |")
    if onnx_res:
        lines += ["", "| onnxruntime (1 thread, same model) | size | wall p50 (ms) | CPU p50 (ms) |", "|---|---|---|---|"]
        for k, r in onnx_res.items():
            lines.append(f"| {k} | {osizes[k] / 1e6:.2f} MB | {r['wall_p50']:.2f} | {r['cpu_p50']:.2f} |")
    if kern:
        lines += ["", "| single layer (1 thread) | fp32 CPU p50 (ms) | int8 CPU p50 (ms) | int8/fp32 |", "|---|---|---|---|"]
        for name in dict.fromkeys(k.rsplit(" ", 1)[0] for k in kern):
            f, i = kern[f"{name} fp32"]["cpu_p50"], kern[f"{name} int8"]["cpu_p50"]
            lines.append(f"| {name} | {f:.3f} | {i:.3f} | {i / f:.2f} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


@contextlib.contextmanager
def _silence():
    from export.api import captured_output

    with captured_output():
        yield


if __name__ == "__main__":
    sys.exit(main())
