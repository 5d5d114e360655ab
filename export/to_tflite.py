"""TFLite: onnx2tf -> SavedModel -> TFLiteConverter, NHWC, batch 1, builtin ops only.

The SavedModels (float graph, int8 graph of the int8 source model) are built once per export run and
cached in ctx.cache. The full-integer export reuses the ONNX int8 plan (export/to_onnx.py) to keep the
same layers float.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from edgekd.export import metadata as md
from edgekd.export.context import ExportContext, agreement, first_line, quiet_stdout, tf_quiet
from edgekd.export.graph import xnnpack_friendly
from edgekd.export.runtimes import TfliteRunner, tflite_interpreter, tflite_ops
from edgekd.export.to_onnx import export_onnx_torchscript, int8_model, int8_plan
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.progress import log

ONNX2TF_OPSET = 17  # the intermediate graph fed to onnx2tf (TorchScript exporter, batch 1)


def saved_model(ctx: ExportContext, int8: bool, qat: Optional[bool] = None, rewrite: bool = True) -> Path:
    """onnx2tf SavedModel (NHWC, batch 1) of the XNNPACK-friendly student (see export/graph.py): the int8
    graph of int8_model(ctx) (qat, the default for int8) or of the student itself, or the float graph
    (cached). rewrite=False: the activations as torchvision writes them (the latency study's "naive")."""
    qat = int8 if qat is None else qat
    if qat and int8_model(ctx) is ctx.model:  # no fine-tuning happened: one conversion serves both
        qat = False
    tag = ("int8" if int8 else "float") + ("_qat" if qat else "") + ("" if rewrite else "_naive")
    key = f"saved_model_{tag}"
    if key in ctx.cache:
        return ctx.cache[key]
    src = ctx.work / f"student_{tag}_b1.onnx"
    source = int8_model(ctx) if qat else ctx.model
    graph = xnnpack_friendly(source, int8=int8) if rewrite else copy.deepcopy(source).eval()
    export_onnx_torchscript(graph, torch.from_numpy(ctx.calib[:1].copy()), src, ONNX2TF_OPSET, dynamic_batch=False)
    out = ctx.work / f"saved_model_{tag}"
    if out.exists():
        shutil.rmtree(out)
    onnx_copy = ctx.work / f"onnx2tf_input_{tag}.onnx"  # onnx2tf rewrites its input in place
    shutil.copyfile(src, onnx_copy)
    tf_quiet()
    onnx2tf = importlib.import_module("onnx2tf")
    sample = ctx.calib_nhwc_01[:20]

    def convert(**extra) -> None:
        with onnx2tf_offline(sample), quiet_stdout():
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_copy),
                output_folder_path=str(out),
                output_signaturedefs=True,
                non_verbose=True,
                verbosity="error",
                **extra,
            )

    strict = True
    try:
        convert()
    except (Exception, SystemExit) as e:
        # onnx2tf's "strict mode" re-checks layouts when a shape has repeated dims (e.g. 16x16x16 at
        # 32 px) and fails on a Mul by a scalar constant; retry without it (parity checks the result).
        log(
            f"export: onnx2tf failed in strict mode ({type(e).__name__}: {first_line(e)}); retrying "
            "with disable_strict_mode"
        )
        strict = False
        shutil.rmtree(out, ignore_errors=True)
        shutil.copyfile(src, onnx_copy)
        convert(disable_strict_mode=True)
    if not (out / "saved_model.pb").exists():
        raise EdgekdError(f"onnx2tf wrote no SavedModel into {out}")
    ctx.cache[key] = out
    ctx.cache[key + "_strict"] = strict
    return out


@contextlib.contextmanager
def onnx2tf_offline(sample_nhwc01: np.ndarray):
    """onnx2tf downloads a 20-image calibration sample from GitHub for its own output checks unless a
    file of that name is in the working directory. Hand it our real images instead (no network)."""
    mod = importlib.import_module("onnx2tf.onnx2tf")
    original = getattr(mod, "download_test_image_data", None)
    data = np.ascontiguousarray(sample_nhwc01, dtype=np.float32)
    if len(data) < 20:
        data = np.concatenate([data] * (20 // max(1, len(data)) + 1))[:20]
    mod.download_test_image_data = lambda: data.copy()
    try:
        yield
    finally:
        if original is not None:
            mod.download_test_image_data = original


def tflite_convert(
    ctx: ExportContext,
    int8_graph: bool,
    configure: Callable[[Any], None],
    qat: Optional[bool] = None,
    rewrite: bool = True,
) -> bytes:
    """The flatbuffer of saved_model(ctx, int8_graph, qat, rewrite) with `configure(converter)` applied."""
    tf_quiet()
    import tensorflow as tf

    sm = saved_model(ctx, int8=int8_graph, qat=qat, rewrite=rewrite)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    # Builtin ops only: the app ships the plain LiteRT runtime, no Flex (Select TF ops) delegate.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(conv)
    with quiet_stdout():
        return conv.convert()


def representative(ctx: ExportContext):
    """The converter's representative dataset: the calibration images, NHWC, one at a time."""
    x = ctx.calib_nhwc

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return gen


def write_tflite(content: bytes, out: Path, meta: dict) -> None:
    out.write_bytes(md.embed_tflite_bytes(content, meta))


# ----------------------------------------------------------------------------------------------
# converters (see export/converters.py)


def tflite_fp32(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    write_tflite(tflite_convert(ctx, False, lambda c: None), out, meta)
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter", "graph": "hard-sigmoid as relu6(x+3)/6"}


def tflite_fp16(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import tensorflow as tf

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    write_tflite(tflite_convert(ctx, False, cfg), out, meta)
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter (float16 weights)"}


def tflite_dynamic(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import tensorflow as tf

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]

    # the student's own weights: activations stay float here, so QAT's drift would cost more than it saves
    write_tflite(tflite_convert(ctx, True, cfg, qat=False), out, meta)
    return {
        "converter": "onnx2tf -> tf.lite.TFLiteConverter (dynamic range)",
        "quantization": {"weights": "int8 per-channel", "activations": "float32 (quantized on the fly)"},
    }


# ----------------------------------------------------------------------------------------------
# full integer


def tflite_compute_ops(content: bytes) -> list[dict]:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in execution order: op, output tensor name, weight shape."""
    it = tflite_interpreter(content, delegates=False)
    t = {d["index"]: d for d in it.get_tensor_details()}
    return [
        {"op": o["op_name"], "name": t[o["outputs"][0]]["name"], "weight": [int(v) for v in t[o["inputs"][1]]["shape"]]}
        for o in tflite_ops(it)
        if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]


def same_layer(onnx_shape: Optional[list], tfl: dict) -> bool:
    """ONNX Conv [O, I/g, kh, kw] / Gemm [O, I] vs TFLite CONV_2D [O, kh, kw, I], DEPTHWISE [1, kh, kw, O],
    FC [O, I]."""
    if not onnx_shape:
        return False
    w = tfl["weight"]
    if tfl["op"] == "FULLY_CONNECTED":
        return len(onnx_shape) == 2 and list(onnx_shape) == w
    if len(onnx_shape) != 4 or len(w) != 4:
        return False
    o, i, kh, kw = onnx_shape
    if tfl["op"] == "DEPTHWISE_CONV_2D":
        return i == 1 and w == [1, kh, kw, o]
    return w == [o, kh, kw, i]


def full_int8_config(representative_dataset: Callable, io: str = "float32") -> Callable[[Any], None]:
    """TFLiteConverter settings of a full-integer model: int8 kernels only, calibrated on
    `representative_dataset`, input/output tensors of type `io` ("float32": QUANTIZE/DEQUANTIZE at the ends,
    what the export ships; "int8"/"uint8": quantized I/O)."""
    import tensorflow as tf

    io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative_dataset
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = io_type
        c.inference_output_type = io_type

    return cfg


def full_int8_settings(ctx: ExportContext) -> Callable[[Any], None]:
    """The full-integer export's settings (float32 I/O, the calibration images); the latency study
    (export/int8_latency.py) uses the same function so it measures what the export builds."""
    return full_int8_config(representative(ctx))


def tflite_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    """Full-integer: int8 weights (per-channel) and activations, float32 input/output (QUANTIZE/DEQUANTIZE
    at the ends, run by XNNPACK), on the XNNPACK-friendly graph (export/graph.py). The layers int8_plan keeps
    float (chosen on the ONNX graph by calibration logit MSE) are matched to the TFLite ops by execution
    order and weight shape and kept float with the TFLite quantization debugger's denylist."""
    import tensorflow as tf

    rep = representative(ctx)  # also the quantization debugger's dataset below
    cfg = full_int8_settings(ctx)
    content = tflite_convert(ctx, True, cfg)
    full_agree = agreement(TfliteRunner(content, ctx.threads)(ctx.calib), ctx.calib_logits)
    kept, note = [], None
    plan = int8_plan(ctx) if ctx.options["int8_max_float_layers"] else None
    if plan and plan["kept_float"]:
        ops = tflite_compute_ops(content)
        shapes = plan["compute_weight_shapes"]
        if len(ops) != len(shapes) or not all(same_layer(shapes[i], ops[i]) for i in plan["kept_float_index"]):
            note = (
                f"could not match the ONNX layers kept float to TFLite ops ({len(ops)} vs {len(shapes)} "
                "compute ops); all layers int8"
            )
        else:
            names = [ops[i]["name"] for i in plan["kept_float_index"]]
            try:
                sm = saved_model(ctx, int8=True)
                conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                cfg(conv)
                opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names)
                with quiet_stdout():
                    dbg = tf.lite.experimental.QuantizationDebugger(
                        converter=conv, debug_dataset=rep, debug_options=opts
                    )
                    mixed = dbg.get_nondebug_quantized_model()
                content = mixed
                kept = [
                    f"{ops[i]['op']} #{i} ({plan['kept_float'][k]})" for k, i in enumerate(plan["kept_float_index"])
                ]
            except Exception as e:
                note = f"selective quantization failed ({first_line(e)}); all layers int8"
    agree = agreement(TfliteRunner(content, ctx.threads)(ctx.calib), ctx.calib_logits)
    write_tflite(content, out, meta)
    q = {
        "weights": "int8 symmetric per-channel",
        "activations": "int8 per-tensor",
        "io": "float32",
        "qat": ctx.cache.get("qat_info"),
        "calibration": f"{len(ctx.calib)} training images",
        "kept_float": kept or "none",
        "allowed_float_compute_ops": len(kept),
        "calibration_agreement": round(agree, 4),
        "calibration_agreement_all_int8": round(full_agree, 4),
    }
    if note:
        q["note"] = note
    return {
        "converter": "onnx2tf -> tf.lite.TFLiteConverter (full integer)",
        "graph": "hard-swish as relu6(x+3)*(x/6), hard-sigmoid as relu6(x+3)/6 (XNNPACK-delegated)",
        "onnx2tf_strict_mode": ctx.cache.get("saved_model_int8_qat_strict", ctx.cache.get("saved_model_int8_strict")),
        "quantization": q,
    }
