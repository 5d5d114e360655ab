"""TFLite: onnx2tf -> SavedModel -> TFLiteConverter, NHWC, batch 1, builtin ops only.

The SavedModels (float graph, int8 graph of the int8 source model) are built once per export run and
cached in ctx.cache. The full-integer export takes the ONNX int8 plan's candidate float layers
(export/to_onnx.py) and keeps the prefix of them that does best on TFLite's own output (possibly none).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import shutil
import time
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
    return ship_fastest(ctx, spec, out, meta, "fp32")


def tflite_fp16(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    return ship_fastest(ctx, spec, out, meta, "fp16")


# ----------------------------------------------------------------------------------------------
# float candidates: converter choice by measurement (export/candidates.py)


def onnx2tf_float(ctx: ExportContext, precision: str) -> bytes:
    """onnx2tf SavedModel -> TFLiteConverter; fp16: float16 weights (DEQUANTIZE to float32 at load)."""
    if precision == "fp32":
        return tflite_convert(ctx, False, lambda c: None)
    import tensorflow as tf

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    return tflite_convert(ctx, False, cfg)


def litert_torch_float(ctx: ExportContext, precision: str) -> bytes:
    """litert-torch straight from PyTorch (torch.export -> LiteRT), the same XNNPACK-friendly graph as onnx2tf's,
    with channel-last I/O (litert_torch.to_channel_last_io) so the file keeps the NHWC [1, H, W, 3] input
    contract; fp16: ai-edge-quantizer float casting of the fp32 file's conv/fc weights (float compute)."""
    key = "litert_torch_fp32"
    if key not in ctx.cache:
        tf_quiet()
        litert_torch = importlib.import_module("litert_torch")
        graph = litert_torch.to_channel_last_io(xnnpack_friendly(ctx.model, int8=False), args=[0]).eval()
        sample = torch.from_numpy(ctx.calib_nhwc[:1].copy())
        path = ctx.work / "litert_torch_fp32.tflite"
        with quiet_stdout():
            litert_torch.convert(graph, (sample,)).export(str(path))
        ctx.cache[key] = path.read_bytes()
    if precision == "fp32":
        return ctx.cache[key]
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(ctx.cache[key])
    q.update_quantization_recipe(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key="float_casting",
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
    )
    with quiet_stdout():
        return bytes(q.quantize().quantized_model)


# converter name (ExportConfig.tflite_converters) -> (builder(ctx, precision) -> flatbuffer, modules it needs,
# what the manifest calls it)
FLOAT_CANDIDATES: dict[str, tuple[Callable[[ExportContext, str], bytes], tuple[str, ...], str]] = {
    "onnx2tf": (onnx2tf_float, ("onnx", "tensorflow", "onnx2tf"), "onnx2tf -> tf.lite.TFLiteConverter"),
    "litert-torch": (
        litert_torch_float,
        ("litert_torch", "ai_edge_quantizer"),
        "litert-torch (PyTorch -> LiteRT, channel-last I/O)",
    ),
}
FP16_SUFFIX = " (float16 weights)"


def calibration_parity(ctx: ExportContext, spec, content: bytes) -> dict:
    """Parity of a candidate when the export stage gave no test-image check: the calibration images, the
    artifact's default gate."""
    from edgekd.export.formats import gate_for
    from edgekd.export.parity import apply_gate, parity_metrics

    par = parity_metrics(ctx.calib_logits, TfliteRunner(content, ctx.threads)(ctx.calib))
    status, why = apply_gate(par, gate_for(spec))
    par.update(status=status, on="calibration images")
    if why:
        par["failed"] = why
    return par


def ship_fastest(
    ctx: ExportContext, spec, out: Path, meta: dict, precision: str, timer: Optional[Callable[..., dict]] = None
) -> dict:
    """Build every configured candidate (ctx.options["tflite_converters"]), check each with the artifact's
    parity check (ctx.parity_check), time the ones built (interleaved, export/candidates.py) and write the
    fastest that passed to `out`. None passed: the first one built is written (its parity gate then fails
    the artifact with the reason)."""
    from edgekd.export import candidates as cands_mod
    from edgekd.export.formats import module_available

    names = list(ctx.options.get("tflite_converters") or ["onnx2tf"])
    check = ctx.parity_check or (lambda content: calibration_parity(ctx, spec, content))
    want = [1, ctx.size, ctx.size, 3]  # the NHWC contract of every TFLite artifact (model.json, Android app)
    records: list[dict] = []
    built: dict[str, bytes] = {}
    for name in names:
        rec: dict[str, Any] = {"converter": name, "status": "failed", "reason": None, "latency_ms": None}
        records.append(rec)
        if name not in FLOAT_CANDIDATES:
            rec["reason"] = f"unknown converter {name!r} (known: {', '.join(FLOAT_CANDIDATES)})"
            continue
        build, needs, _ = FLOAT_CANDIDATES[name]
        missing = [m for m in needs if not module_available(m)]
        if missing:
            rec.update(status="skipped", reason=f"not installed: {', '.join(missing)}")
            continue
        t0 = time.time()
        try:
            content = build(ctx, precision)
            shape = [int(v) for v in tflite_interpreter(content, 1, delegates=False).get_input_details()[0]["shape"]]
        except Exception as e:
            rec["reason"] = f"conversion failed: {type(e).__name__}: {first_line(e)}"
            log(f"export: {spec.name} candidate {name}: {rec['reason']}")
            continue
        rec.update(convert_seconds=round(time.time() - t0, 2), size_bytes=len(content), input_shape=shape)
        rec["ops"] = cands_mod.op_counts(content)
        if shape != want:
            rec["reason"] = f"input shape {shape} is not the NHWC contract {want}"
            continue
        built[name] = content
        par = check(content)
        rec["parity"] = cands_mod.parity_summary(par)
        rec["status"] = "passed" if par.get("status") == "passed" else "failed"
        if rec["status"] != "passed":
            rec["reason"] = "parity gate missed: " + "; ".join(par.get("failed") or [str(par.get("status"))])
    if not built:
        raise EdgekdError(
            f"no TFLite {precision} candidate could be built: "
            + "; ".join(f"{r['converter']}: {r['reason']}" for r in records)
        )
    timing = None
    if len(built) > 1 and any(r["status"] == "passed" for r in records):
        timer = timer or ctx.timer or cands_mod.interleaved_latency
        timing = timer(
            built,
            x=ctx.calib[:1],
            threads=ctx.threads,
            rounds=int(ctx.options.get("candidate_timing_rounds") or 40),
            runs=int(ctx.options.get("candidate_timing_runs") or 20),
        )
        for r in records:
            if r["converter"] in timing:
                r["latency_ms"] = timing[r["converter"]]["median_ms"]
                r["latency"] = timing[r["converter"]]
    choice = cands_mod.choose(records)
    shipped = choice["chosen"] or next(iter(built))
    choice["shipped"] = shipped
    choice["timed_on"] = (
        f"LiteRT interpreter + XNNPACK, {ctx.threads} thread(s), batch 1, {next(iter(timing.values()))['rounds']} "
        f"interleaved rounds of {next(iter(timing.values()))['runs_per_round']} runs, median of rounds"
        if timing
        else None
    )
    log(f"export: {spec.name}: {choice['why']}")
    write_tflite(built[shipped], out, meta)
    label = FLOAT_CANDIDATES[shipped][2] + (FP16_SUFFIX if precision == "fp16" else "")
    info: dict[str, Any] = {"converter": label, "candidates": records, "choice": choice}
    info["graph"] = "hard-sigmoid as relu6(x+3)/6, classifier hard-swish on an (N, C, 1, 1) view"
    return info


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
    at the ends, run by XNNPACK), on the XNNPACK-friendly graph (export/graph.py).

    Which layers stay float is decided on TFLite's own output: int8_plan proposes layers in its greedy order
    (chosen on the ONNX graph, whose kernels round differently); they are matched to the TFLite ops by
    execution order and weight shape, and every prefix of that order (all-int8 included) is quantized with
    the TFLite quantization debugger's denylist and run in the LiteRT interpreter on the calibration images.
    The set with the best agreement with the student wins (ties: lower logit MSE, then fewer float layers),
    so all-int8 is kept whenever the ONNX choice does not help on TFLite."""
    import tensorflow as tf

    from edgekd.export.context import logit_mse

    rep = representative(ctx)  # also the quantization debugger's dataset below
    cfg = full_int8_settings(ctx)
    content = tflite_convert(ctx, True, cfg)
    full_logits = TfliteRunner(content, ctx.threads)(ctx.calib)
    full_agree = agreement(full_logits, ctx.calib_logits)
    tried = [
        {
            "kept_float": 0,
            "calibration_agreement": round(full_agree, 4),
            "calibration_mse": round(logit_mse(full_logits, ctx.calib_logits), 6),
        }
    ]
    best = (full_agree, -logit_mse(full_logits, ctx.calib_logits), 0)
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
            order = plan["kept_float_index"]
            try:
                sm = saved_model(ctx, int8=True)
                conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                cfg(conv)
                opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[ops[order[0]]["name"]])
                with quiet_stdout():  # calibrates once; each denylist below is only a re-quantization
                    dbg = tf.lite.experimental.QuantizationDebugger(
                        converter=conv, debug_dataset=rep, debug_options=opts
                    )
                for n in range(1, len(order) + 1):
                    dbg.options.denylisted_nodes = [ops[i]["name"] for i in order[:n]]
                    with quiet_stdout():
                        mixed = dbg.get_nondebug_quantized_model()
                    lg = TfliteRunner(mixed, ctx.threads)(ctx.calib)
                    a, m = agreement(lg, ctx.calib_logits), logit_mse(lg, ctx.calib_logits)
                    tried.append(
                        {"kept_float": n, "calibration_agreement": round(a, 4), "calibration_mse": round(m, 6)}
                    )
                    if (a, -m, -n) > (best[0], best[1], -best[2]):
                        best, content = (a, -m, n), mixed
                kept = [f"{ops[i]['op']} #{i} ({plan['kept_float'][k]})" for k, i in enumerate(order[: best[2]])]
            except Exception as e:
                note = f"selective quantization failed ({first_line(e)}); all layers int8"
                content = tflite_convert(ctx, True, cfg)
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
        "float_layer_choice": {
            "decided_on": f"LiteRT interpreter, {len(ctx.calib)} calibration images (agreement with the student)",
            "candidates": tried,
            "kept": len(kept),
        },
    }
    if note:
        q["note"] = note
    return {
        "converter": "onnx2tf -> tf.lite.TFLiteConverter (full integer)",
        "graph": "hard-swish as relu6(x+3)*(x/6), hard-sigmoid as relu6(x+3)/6 (XNNPACK-delegated)",
        "onnx2tf_strict_mode": ctx.cache.get("saved_model_int8_qat_strict", ctx.cache.get("saved_model_int8_strict")),
        "quantization": q,
    }
