"""ONNX: the fp32 graph (torch.onnx.export, dynamic batch) and the onnxruntime QDQ int8 model.

The fp32 graph of the student, the int8 source model (the student or its QAT copy, see `int8_model`) and
the int8 plan (the QDQ model and the layers kept float, see `int8_plan`) are built once per export run
and cached in ctx.cache: the TFLite int8 export (export/to_tflite.py) reuses the last two.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.export import metadata as md
from edgekd.export.context import ExportContext, agreement, first_line, logit_mse, quiet_stdout
from edgekd.export.runtimes import OnnxRunner
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.progress import log

ONNX_OPSET = 20  # the shipped ONNX file


# ----------------------------------------------------------------------------------------------
# the int8 source model and the fp32 graph


def int8_model(ctx: ExportContext) -> torch.nn.Module:
    """The float model the int8 converters quantize: the student, or its QAT fine-tuned copy (cached).

    int8_qat "on" always fine-tunes; "auto" fine-tunes when the all-int8 onnxruntime model agrees with
    the student on fewer than int8_target_agreement of the scan images; "off" never."""
    if "int8_model" in ctx.cache:
        return ctx.cache["int8_model"]
    mode = str(ctx.options["int8_qat"])
    if mode not in ("auto", "on", "off"):
        raise EdgekdError(f"unknown int8_qat {mode!r}; use 'auto', 'on' or 'off'")
    target = float(ctx.options["int8_target_agreement"])
    model, info = ctx.model, {"used": False, "mode": mode}
    if mode == "auto":
        n = min(len(ctx.calib), int(ctx.options["int8_scan_images"]))
        q = OnnxRunner(ort_quantize(ctx, onnx_graph(ctx), ctx.work / "int8", []), ctx.threads)(ctx.calib[:n])
        ptq = agreement(q, ctx.calib_logits[:n])
        info["ptq_calibration_agreement"] = round(ptq, 4)
        log(
            f"export: all-int8 post-training quantization agrees with the student on {ptq * 100:.1f}% of {n} "
            f"calibration images (target {target * 100:.1f}%)" + ("; QAT fine-tuning" if ptq < target else "")
        )
    if mode == "on" or (mode == "auto" and info["ptq_calibration_agreement"] < target):
        from edgekd.export.qat import qat_finetune

        n = int(ctx.options["int8_qat_images"])
        train = ctx.train_images(n) if ctx.train_images is not None else ctx.calib
        res = qat_finetune(
            ctx.model,
            train,
            ctx.calib,
            epochs=int(ctx.options["int8_qat_epochs"]),
            lr=float(ctx.options["int8_qat_lr"]),
            weight_qmax=64 if ctx.options["onnx_int8_reduce_range"] else 127,
        )
        model = res.model
        info.update(used=True, **res.info)
        info["float_agreement_calibration"] = round(agreement(ctx.torch_logits(ctx.calib, model), ctx.calib_logits), 4)
    ctx.cache["int8_model"] = model
    ctx.cache["qat_info"] = info
    return model


def onnx_graph(ctx: ExportContext, int8_source: bool = False) -> Path:
    """The student (or, with int8_source, int8_model(ctx)) as ONNX fp32 with a dynamic batch axis (cached).

    Default exporter: TorchScript (`dynamo=False`, ~1.5 s here) + onnxslim to drop its Identity nodes;
    option onnx_exporter="dynamo" uses the torch.export-based exporter (~8-20 s here, same graph)."""
    model = int8_model(ctx) if int8_source else ctx.model
    if int8_source and model is ctx.model:
        return onnx_graph(ctx)
    key = "onnx_int8_source" if int8_source else "onnx_fp32"
    if key in ctx.cache:
        return ctx.cache[key]
    path = ctx.work / ("student.int8src.onnx" if int8_source else "student.onnx")
    x = torch.from_numpy(ctx.calib[:1].copy())
    t0 = time.time()
    if ctx.options["onnx_exporter"] == "dynamo":
        try:
            exporter = export_onnx_dynamo(model, x, path)
        except Exception as e:
            log(
                f"export: dynamo ONNX exporter failed ({type(e).__name__}: {first_line(e)}); "
                "using the TorchScript exporter"
            )
            exporter = None
    else:
        exporter = None
    if exporter is None:
        export_onnx_torchscript(model, x, path, ONNX_OPSET, dynamic_batch=True)
        exporter = f"torch.onnx.export(dynamo=False, opset {ONNX_OPSET})" + slim(path)
    ctx.cache[key] = path
    if not int8_source:
        ctx.cache["onnx_exporter"] = exporter
        ctx.cache["onnx_seconds"] = round(time.time() - t0, 2)
    return path


def slim(path: Path) -> str:
    """Drop the TorchScript exporter's Identity nodes with onnxslim when it is installed."""
    try:
        import onnx
        import onnxslim
    except ImportError:
        return ""
    try:
        with quiet_stdout():
            slimmed = onnxslim.slim(onnx.load(str(path)))
        onnx.save(slimmed, str(path))
        return " + onnxslim"
    except Exception as e:  # slimming is cosmetic
        log(f"export: onnxslim failed ({first_line(e)}); keeping the exporter's graph")
        return ""


def export_onnx_dynamo(model: torch.nn.Module, x: torch.Tensor, path: Path) -> str:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with quiet_stdout():
        prog = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            opset_version=ONNX_OPSET,
            dynamic_shapes=({0: batch},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
        prog.save(str(path), external_data=False)
    return f"torch.onnx.export(dynamo=True, opset {ONNX_OPSET})"


def export_onnx_torchscript(
    model: torch.nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool
) -> None:
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with quiet_stdout():
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


# ----------------------------------------------------------------------------------------------
# int8: onnxruntime static QDQ quantization and the layers kept float


class CalibReader:
    """onnxruntime CalibrationDataReader over normalised NCHW images, in batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16):
        self.x, self.name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i : self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def rewind(self):
        self.i = 0

    def __len__(self):
        return (len(self.x) + self.batch - 1) // self.batch


def compute_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def bypass_qdq(qmodel, float_model, node_names: set[str]):
    """A copy of the QDQ model where the named compute nodes read float inputs and float weights
    (their Q/DQ pairs are bypassed), for a fast sensitivity scan without re-quantizing."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(qmodel)
    prod = {o: n for n in m.graph.node for o in n.output}
    fprod = {o: n for n in float_model.graph.node for o in n.output}
    have = {i.name for i in m.graph.initializer}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    added: dict[str, str] = {}

    def float_tensor(t: str) -> str:
        # The quantizer folds Relu/Clip into the Q range (the Conv then writes the tensor named after the
        # Relu output, unclipped): reading it in float needs that activation back.
        fp, qp = fprod.get(t), prod.get(t)
        if fp is None or qp is None or fp.op_type == qp.op_type or fp.op_type not in ("Relu", "Clip"):
            return t
        if t not in added:
            new = onnx.NodeProto()
            new.CopyFrom(fp)
            new.name = f"{fp.name}__edgekd_float"
            del new.input[:]
            new.input.extend([t] + list(fp.input[1:]))
            for extra in fp.input[1:]:
                if extra and extra in float_inits and extra not in have:
                    m.graph.initializer.append(float_inits[extra])
                    have.add(extra)
            del new.output[:]
            new.output.append(f"{t}__edgekd_float")
            m.graph.node.append(new)
            added[t] = new.output[0]
        return added[t]

    for n in list(m.graph.node):
        if n.name not in node_names:
            continue
        for k, name in enumerate(list(n.input)):
            d = prod.get(name)
            if d is None or d.op_type != "DequantizeLinear":
                continue
            q = prod.get(d.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = float_tensor(q.input[0])
            elif (
                d.input[0].endswith("_quantized")
                and d.input[0][: -len("_quantized")] in float_inits
                and d.input[0][: -len("_quantized")] not in prod
            ):  # (int32 biases dequantize to their own name)
                fname = d.input[0][: -len("_quantized")]
                if fname not in have:
                    m.graph.initializer.append(float_inits[fname])
                    have.add(fname)
                n.input[k] = fname
    return m


def greedy_float_layers(
    q,
    f,
    x: np.ndarray,
    ref: np.ndarray,
    threads: int,
    budget: int,
    target: float,
    mse_fraction: float,
    shortlist: int = 12,
    min_gain: float = 0.0,
) -> dict:
    """Forward selection of the compute layers to keep float, by logit MSE vs PyTorch on calibration images.

    Nothing is kept float when the all-int8 model already meets `target` agreement with a logit MSE below
    1e-3 of the logits' variance. Otherwise step 1 scans every compute layer alone in float (Q/DQ bypassed:
    no re-quantization) and later steps try the `shortlist` best single layers on top of those chosen,
    until the agreement target is met with the MSE below 1e-3 of the variance or below `mse_fraction` of
    the all-int8 MSE, or `budget` layers are float, or the best next layer would remove less than `min_gain`
    of the remaining MSE (a float layer costs speed: it must buy a real share of the error)."""
    base = OnnxRunner(q, threads)(x)
    state = {"mse": logit_mse(base, ref), "agreement": agreement(base, ref)}
    base_mse = state["mse"]
    var = float(np.var(ref)) or 1.0
    steps = [
        {
            "kept_float": [],
            "calibration_mse": round(base_mse, 6),
            "calibration_agreement": round(state["agreement"], 4),
            "relative_mse": round(base_mse / var, 6),
        }
    ]
    chosen: list[str] = []

    def good_enough() -> bool:  # agreement target met and the logit error small (30 dB) or much reduced
        return state["agreement"] >= target and (
            state["mse"] <= 1e-3 * var or (chosen and state["mse"] <= mse_fraction * base_mse)
        )

    if good_enough() or budget <= 0:
        return {"chosen": chosen, "steps": steps, "ranked": []}
    single = []
    for name in compute_nodes(q):
        lg = OnnxRunner(bypass_qdq(q, f, {name}), threads)(x)
        single.append((logit_mse(lg, ref), name, agreement(lg, ref)))
    single.sort()
    short = [n for _, n, _ in single[:shortlist]]
    while len(chosen) < budget and not good_enough():
        if not chosen:
            mse, name, agree = single[0]
        else:
            best = None
            for name in short:
                if name in chosen:
                    continue
                lg = OnnxRunner(bypass_qdq(q, f, set(chosen) | {name}), threads)(x)
                cand = (logit_mse(lg, ref), name, agreement(lg, ref))
                if best is None or cand[0] < best[0]:
                    best = cand
            if best is None:
                break
            mse, name, agree = best
        if state["mse"] - mse < min_gain * state["mse"]:
            steps.append(
                {
                    "stopped": f"best next layer {name} removes {1 - mse / max(state['mse'], 1e-12):.1%} "
                    f"of the logit MSE (< {min_gain:.0%})"
                }
            )
            break
        chosen.append(name)
        state.update(mse=mse, agreement=agree)
        steps.append(
            {
                "kept_float": list(chosen),
                "calibration_mse": round(mse, 6),
                "calibration_agreement": round(agree, 4),
                "relative_mse": round(mse / var, 6),
            }
        )
    return {"chosen": chosen, "steps": steps, "ranked": [(n, round(m, 6)) for m, n, _ in single[:shortlist]]}


def ort_prepared(ctx: ExportContext, src: Path, folder: Path) -> dict:
    """`src` pre-processed for quantization into `folder` (once per folder), with the quantizer settings
    (options onnx_int8_activations, onnx_int8_calibration, onnx_int8_reduce_range) and the models made so far."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType, quant_pre_process

    key = f"ort_quant_{folder}"
    if key not in ctx.cache:
        folder.mkdir(parents=True, exist_ok=True)
        pre = folder / "preprocessed.onnx"
        with quiet_stdout():
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            except Exception as e:  # pre-processing is an optimisation, not a requirement
                log(f"export: onnx quant_pre_process failed ({first_line(e)}); quantizing the plain graph")
                shutil.copyfile(src, pre)
        g = onnx.load(str(pre), load_external_data=False).graph
        outs = {o.name for o in g.output}
        ctx.cache[key] = {
            "pre": pre,
            "act": QuantType.QUInt8 if ctx.options["onnx_int8_activations"] == "uint8" else QuantType.QInt8,
            "method": {
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[ctx.options["onnx_int8_calibration"]],
            "out_ops": sorted({n.op_type for n in g.node if any(o in outs for o in n.output)}),
            "reduce_range": bool(ctx.options["onnx_int8_reduce_range"]),
            "input": OnnxRunner(pre, 1).input_name,
            "models": {},
        }  # tuple(excluded nodes) -> quantized model path
    return ctx.cache[key]


def ort_quantize(ctx: ExportContext, src: Path, folder: Path, exclude: list[str]) -> Path:
    """onnxruntime static QDQ quantization of `src` (see ort_prepared), the layers in `exclude` kept float;
    cached per (folder, exclude)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    o = ort_prepared(ctx, src, folder)
    if tuple(exclude) in o["models"]:
        return o["models"][tuple(exclude)]
    dst = folder / f"quantized-{len(o['models']) + 1}.onnx"
    with quiet_stdout():
        # histogram calibrators stack the per-batch arrays: batches must have one size (batch 1)
        batch = 16 if o["method"] == CalibrationMethod.MinMax else 1
        quantize_static(
            str(o["pre"]),
            str(dst),
            CalibReader(ctx.calib, o["input"], batch),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=o["act"],
            weight_type=QuantType.QInt8,
            calibrate_method=o["method"],
            nodes_to_exclude=exclude,
            calibration_cache_path=str(folder / f"calibration_{o['method'].name}.json"),
            reduce_range=o["reduce_range"],
            # the layer writing the logits keeps a float output (quantized logits clip)
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                "OpTypesToExcludeOutputQuantization": o["out_ops"],
            },
        )
    o["models"][tuple(exclude)] = dst
    return dst


def int8_plan(ctx: ExportContext) -> dict:
    """The ONNX int8 model and the layers kept float (shared by onnx-int8 and tflite-int8; cached).

    The float source is int8_model(ctx) (the student, or its QAT fine-tuned copy). Static QDQ quantization:
    int8 symmetric per-channel weights (7-bit range by default: onnxruntime's U8S8 kernels sum pairs of
    products in int16 on x86 without VNNI and saturate; measured on the ELPV full run, all-int8 agreement
    90.7% -> 96.0%), 8-bit per-tensor activations (uint8 by default: the fast U8S8 path on x86) calibrated
    on training images; the layer writing the logits keeps a float output (quantized logits clip at the
    calibration range: measured 4.8 -> 1.95). Sensitive layers are then kept float by greedy_float_layers
    (at most `int8_max_float_layers`)."""
    if "int8_plan" in ctx.cache:
        return ctx.cache["int8_plan"]
    import onnx

    pre_dir = ctx.work / ("int8_qat" if int8_model(ctx) is not ctx.model else "int8")
    target = float(ctx.options["int8_target_agreement"])
    budget = int(ctx.options["int8_max_float_layers"])
    src = onnx_graph(ctx, int8_source=True)
    full = ort_quantize(ctx, src, pre_dir, [])
    q_opts = ort_prepared(ctx, src, pre_dir)
    pre, act, method, out_ops = q_opts["pre"], q_opts["act"], q_opts["method"], q_opts["out_ops"]
    n_scan = min(len(ctx.calib), int(ctx.options["int8_scan_images"]))
    t0 = time.time()
    sel = greedy_float_layers(
        onnx.load(str(full)),
        onnx.load(str(pre)),
        ctx.calib[:n_scan],
        ctx.calib_logits[:n_scan],
        ctx.threads,
        budget,
        target,
        float(ctx.options["int8_mse_fraction"]),
        min_gain=float(ctx.options["int8_min_gain"]),
    )
    chosen = sel["chosen"]
    model = full
    if chosen:
        model = ort_quantize(ctx, src, pre_dir, chosen)
    logits = OnnxRunner(model, ctx.threads)(ctx.calib)
    pre_model = onnx.load(str(pre), load_external_data=False)
    compute = compute_nodes(pre_model)
    inits = {i.name: list(i.dims) for i in pre_model.graph.initializer}
    wshape = {n.name: inits.get(n.input[1]) for n in pre_model.graph.node if n.name in set(compute)}
    plan = {
        "model": model,
        "kept_float": chosen,
        "kept_float_index": [compute.index(c) for c in chosen if c in compute],
        "compute_layers": len(compute),
        "compute_weight_shapes": [wshape.get(c) for c in compute],
        "info": {
            "weights": "int8 symmetric per-channel"
            + (" (7-bit range: reduce_range)" if q_opts["reduce_range"] else ""),
            "activations": f"{act.name} per-tensor",
            "qat": ctx.cache.get("qat_info"),
            "calibration": f"{method.name} on {len(ctx.calib)} training images",
            "float_output": f"{', '.join(out_ops)} writing the logits (no clipping to the calibration range)",
            "kept_float": chosen or "none",
            "selection": {
                "method": "greedy by calibration logit MSE vs PyTorch (Q/DQ bypass)",
                "images": n_scan,
                "budget": budget,
                "target_agreement": target,
                "steps": sel["steps"],
                "seconds": round(time.time() - t0, 1),
            },
            "calibration_agreement": round(agreement(logits, ctx.calib_logits), 4),
            "calibration_mse": round(logit_mse(logits, ctx.calib_logits), 6),
        },
    }
    ctx.cache["int8_plan"] = plan
    return plan


# ----------------------------------------------------------------------------------------------
# converters (see export/converters.py)


def onnx_fp32(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import onnx

    src = onnx_graph(ctx)
    shutil.copyfile(src, out)
    md.embed_onnx(out, meta)
    onnx.checker.check_model(str(out), full_check=True)
    return {
        "converter": ctx.cache.get("onnx_exporter"),
        "opset": ONNX_OPSET,
        "checker": "onnx.checker full_check",
        "dynamic_batch": True,
    }


def onnx_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    """int8_plan's QDQ model with metadata (see int8_plan)."""
    import onnx

    plan = int8_plan(ctx)
    shutil.copyfile(plan["model"], out)
    md.embed_onnx(out, meta)
    onnx.checker.check_model(str(out), full_check=False)
    return {
        "converter": "onnxruntime.quantization.quantize_static (QDQ)",
        "opset": ONNX_OPSET,
        "quantization": {**plan["info"], "allowed_float_compute_ops": len(plan["kept_float"])},
    }
