"""The converters named in export/formats.py. Each is `fn(ctx, spec, out: Path, meta: dict) -> dict`:
it writes the model file (or .mlpackage folder) at `out` (a temporary path the caller publishes
atomically), embeds `meta` in the format's metadata place, and returns facts for the manifest.

Shared intermediate products (the fp32 ONNX graph, the TF SavedModels from onnx2tf, the CoreML fp16
model) are built once per export run in `ctx.work` and reused.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from export import metadata as md
from export.graph import xnnpack_friendly
from export.qat import batched_logits
from pipeline.errors import EdgekdError
from pipeline.progress import log

ONNX_OPSET = 20  # the shipped ONNX file
ONNX2TF_OPSET = 17  # the intermediate graph fed to onnx2tf (TorchScript exporter, batch 1)


class ExportContext:
    """Everything the converters share: the student, its data, and cached intermediate products."""

    def __init__(self, *, model: torch.nn.Module, arch: str, labels: list[str], image_size: int, mean, std,
                 calib: np.ndarray, work: Path, threads: int, source_sha256: str, options: Optional[dict] = None,
                 train_images: Optional[Callable[[int], np.ndarray]] = None):
        self.model = model.eval()
        self.train_images = train_images  # n -> up to n normalised NCHW training images (QAT); None: calib only
        self.arch = arch
        self.labels = labels
        self.size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.calib = np.ascontiguousarray(calib, dtype=np.float32)  # normalised NCHW training images
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.threads = int(threads)
        self.source_sha256 = source_sha256
        from export.api import OPTION_DEFAULTS

        self.options = {**OPTION_DEFAULTS, **(options or {})}
        self._cache: dict[str, Any] = {}

    # -- reference ---------------------------------------------------------------------------
    def torch_logits(self, x: np.ndarray, model: Optional[torch.nn.Module] = None) -> np.ndarray:
        if not len(x):
            return np.zeros((0, len(self.labels)), np.float32)
        return batched_logits(model or self.model, x)

    @property
    def calib_logits(self) -> np.ndarray:
        if "calib_logits" not in self._cache:
            self._cache["calib_logits"] = self.torch_logits(self.calib)
        return self._cache["calib_logits"]

    # -- int8 source ----------------------------------------------------------------------------
    def int8_model(self) -> torch.nn.Module:
        """The float model the int8 converters quantize: the student, or its QAT fine-tuned copy (cached).

        int8_qat "on" always fine-tunes; "auto" fine-tunes when the all-int8 onnxruntime model agrees with
        the student on fewer than int8_target_agreement of the scan images; "off" never."""
        if "int8_model" in self._cache:
            return self._cache["int8_model"]
        mode = str(self.options["int8_qat"])
        if mode not in ("auto", "on", "off"):
            raise EdgekdError(f"unknown int8_qat {mode!r}; use 'auto', 'on' or 'off'")
        target = float(self.options["int8_target_agreement"])
        model, info = self.model, {"used": False, "mode": mode}
        if mode == "auto":
            n = min(len(self.calib), int(self.options["int8_scan_images"]))
            q = _ort_logits(_ort_quantize(self, self.onnx_fp32(), self.work / "int8", []), self.calib[:n],
                            self.threads)
            ptq = agreement(q, self.calib_logits[:n])
            info["ptq_calibration_agreement"] = round(ptq, 4)
            log(f"export: all-int8 post-training quantization agrees with the student on {ptq * 100:.1f}% of {n} "
                f"calibration images (target {target * 100:.1f}%)" + ("; QAT fine-tuning" if ptq < target else ""))
        if mode == "on" or (mode == "auto" and info["ptq_calibration_agreement"] < target):
            from export.qat import qat_finetune

            n = int(self.options["int8_qat_images"])
            train = self.train_images(n) if self.train_images is not None else self.calib
            res = qat_finetune(self.model, train, self.calib, epochs=int(self.options["int8_qat_epochs"]),
                               lr=float(self.options["int8_qat_lr"]),
                               weight_qmax=64 if self.options["onnx_int8_reduce_range"] else 127)
            model = res.model
            info.update(used=True, **res.info)
            info["float_agreement_calibration"] = round(agreement(self.torch_logits(self.calib, model),
                                                                  self.calib_logits), 4)
        self._cache["int8_model"] = model
        self._cache["qat_info"] = info
        return model

    # -- ONNX ---------------------------------------------------------------------------------
    def onnx_fp32(self, int8_source: bool = False) -> Path:
        """The student (or, with int8_source, int8_model()) as ONNX fp32 with a dynamic batch axis (cached).

        Default exporter: TorchScript (`dynamo=False`, ~1.5 s here) + onnxslim to drop its Identity nodes;
        option onnx_exporter="dynamo" uses the torch.export-based exporter (~8-20 s here, same graph)."""
        model = self.int8_model() if int8_source else self.model
        if int8_source and model is self.model:
            return self.onnx_fp32()
        key = "onnx_int8_source" if int8_source else "onnx_fp32"
        if key in self._cache:
            return self._cache[key]
        path = self.work / ("student.int8src.onnx" if int8_source else "student.onnx")
        x = torch.from_numpy(self.calib[:1].copy())
        t0 = time.time()
        if self.options["onnx_exporter"] == "dynamo":
            try:
                exporter = _export_onnx_dynamo(model, x, path)
            except Exception as e:
                log(f"export: dynamo ONNX exporter failed ({type(e).__name__}: {_first_line(e)}); "
                    "using the TorchScript exporter")
                exporter = None
        else:
            exporter = None
        if exporter is None:
            _export_onnx_torchscript(model, x, path, ONNX_OPSET, dynamic_batch=True)
            exporter = f"torch.onnx.export(dynamo=False, opset {ONNX_OPSET})" + _slim(path)
        self._cache[key] = path
        if not int8_source:
            self._cache["onnx_exporter"] = exporter
            self._cache["onnx_seconds"] = round(time.time() - t0, 2)
        return path

    # -- TensorFlow ----------------------------------------------------------------------------
    def saved_model(self, int8: bool, qat: Optional[bool] = None) -> Path:
        """onnx2tf SavedModel (NHWC, batch 1) of the XNNPACK-friendly student (see export/graph.py): the int8
        graph of int8_model() (qat, the default for int8) or of the student itself, or the float graph."""
        qat = int8 if qat is None else qat
        if qat and self.int8_model() is self.model:  # no fine-tuning happened: one conversion serves both
            qat = False
        tag = ("int8" if int8 else "float") + ("_qat" if qat else "")
        key = f"saved_model_{tag}"
        if key in self._cache:
            return self._cache[key]
        src = self.work / f"student_{tag}_b1.onnx"
        friendly = xnnpack_friendly(self.int8_model() if qat else self.model, int8=int8)
        _export_onnx_torchscript(friendly, torch.from_numpy(self.calib[:1].copy()), src, ONNX2TF_OPSET,
                                 dynamic_batch=False)
        out = self.work / f"saved_model_{tag}"
        if out.exists():
            shutil.rmtree(out)
        onnx_copy = self.work / f"onnx2tf_input_{tag}.onnx"  # onnx2tf rewrites its input in place
        shutil.copyfile(src, onnx_copy)
        _tf_quiet()
        onnx2tf = importlib.import_module("onnx2tf")
        sample = self.calib_nhwc_01[:20]
        strict = True
        try:
            with _onnx2tf_offline(sample), _quiet_stdout():
                onnx2tf.convert(input_onnx_file_path=str(onnx_copy), output_folder_path=str(out),
                                output_signaturedefs=True, non_verbose=True, verbosity="error")
        except (Exception, SystemExit) as e:
            # onnx2tf's "strict mode" re-checks layouts when a shape has repeated dims (e.g. 16x16x16 at
            # 32 px) and fails on a Mul by a scalar constant; retry without it (parity checks the result).
            log(f"export: onnx2tf failed in strict mode ({type(e).__name__}: {_first_line(e)}); retrying "
                "with disable_strict_mode")
            strict = False
            shutil.rmtree(out, ignore_errors=True)
            shutil.copyfile(src, onnx_copy)
            with _onnx2tf_offline(sample), _quiet_stdout():
                onnx2tf.convert(input_onnx_file_path=str(onnx_copy), output_folder_path=str(out),
                                output_signaturedefs=True, non_verbose=True, verbosity="error",
                                disable_strict_mode=True)
        if not (out / "saved_model.pb").exists():
            raise EdgekdError(f"onnx2tf wrote no SavedModel into {out}")
        self._cache[key] = out
        self._cache[key + "_strict"] = strict
        return out

    @property
    def calib_nhwc(self) -> np.ndarray:
        return np.ascontiguousarray(self.calib.transpose(0, 2, 3, 1))

    @property
    def calib_nhwc_01(self) -> np.ndarray:
        """Calibration images back in 0..1 (what onnx2tf's own sample data looks like)."""
        m = np.array(self.mean, np.float32).reshape(1, 1, 1, 3)
        s = np.array(self.std, np.float32).reshape(1, 1, 1, 3)
        return np.clip(self.calib_nhwc * s + m, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# helpers


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


@contextlib.contextmanager
def _quiet_stdout():
    """Converters print progress to stdout; keep the CLI's stdout clean (errors still raise)."""
    if os.environ.get("EDGEKD_VERBOSE_CONVERTERS"):
        yield
        return
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _tf_quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))


@contextlib.contextmanager
def _onnx2tf_offline(sample_nhwc01: np.ndarray):
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


def _slim(path: Path) -> str:
    """Drop the TorchScript exporter's Identity nodes with onnxslim when it is installed."""
    try:
        import onnx
        import onnxslim
    except ImportError:
        return ""
    try:
        with _quiet_stdout():
            slim = onnxslim.slim(onnx.load(str(path)))
        onnx.save(slim, str(path))
        return " + onnxslim"
    except Exception as e:  # slimming is cosmetic
        log(f"export: onnxslim failed ({_first_line(e)}); keeping the exporter's graph")
        return ""


def _export_onnx_dynamo(model: torch.nn.Module, x: torch.Tensor, path: Path) -> str:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_stdout():
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                 opset_version=ONNX_OPSET, dynamic_shapes=({0: batch},), external_data=False,
                                 optimize=True, verbose=False)
        prog.save(str(path), external_data=False)
    return f"torch.onnx.export(dynamo=True, opset {ONNX_OPSET})"


def _export_onnx_torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with _quiet_stdout():
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True)


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_logits(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    sess = _ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 32]})[0] for i in range(0, len(x), 32)])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0


# ----------------------------------------------------------------------------------------------
# ONNX


def onnx_fp32(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import onnx

    src = ctx.onnx_fp32()
    shutil.copyfile(src, out)
    md.embed_onnx(out, meta)
    onnx.checker.check_model(str(out), full_check=True)
    return {"converter": ctx._cache.get("onnx_exporter"), "opset": ONNX_OPSET, "checker": "onnx.checker full_check",
            "dynamic_batch": True}


class _CalibReader:
    """onnxruntime CalibrationDataReader over normalised NCHW images, in batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16):
        self.x, self.name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def rewind(self):
        self.i = 0

    def __len__(self):
        return (len(self.x) + self.batch - 1) // self.batch


def _compute_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def _bypass_qdq(qmodel, float_model, node_names: set[str]):
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
            elif d.input[0].endswith("_quantized") and d.input[0][: -len("_quantized")] in float_inits \
                    and d.input[0][: -len("_quantized")] not in prod:  # (int32 biases dequantize to their own name)
                fname = d.input[0][: -len("_quantized")]
                if fname not in have:
                    m.graph.initializer.append(float_inits[fname])
                    have.add(fname)
                n.input[k] = fname
    return m


def _logit_mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def _ort_logits_model(model, x: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])


def _greedy_float_layers(q, f, x: np.ndarray, ref: np.ndarray, threads: int, budget: int, target: float,
                         mse_fraction: float, shortlist: int = 12, min_gain: float = 0.0) -> dict:
    """Forward selection of the compute layers to keep float, by logit MSE vs PyTorch on calibration images.

    Nothing is kept float when the all-int8 model already meets `target` agreement with a logit MSE below
    1e-3 of the logits' variance. Otherwise step 1 scans every compute layer alone in float (Q/DQ bypassed:
    no re-quantization) and later steps try the `shortlist` best single layers on top of those chosen,
    until the agreement target is met with the MSE below 1e-3 of the variance or below `mse_fraction` of
    the all-int8 MSE, or `budget` layers are float, or the best next layer would remove less than `min_gain`
    of the remaining MSE (a float layer costs speed: it must buy a real share of the error)."""
    base = _ort_logits_model(q, x, threads)
    state = {"mse": _logit_mse(base, ref), "agreement": agreement(base, ref)}
    base_mse = state["mse"]
    var = float(np.var(ref)) or 1.0
    steps = [{"kept_float": [], "calibration_mse": round(base_mse, 6), "calibration_agreement": round(state["agreement"], 4),
              "relative_mse": round(base_mse / var, 6)}]
    chosen: list[str] = []

    def good_enough() -> bool:  # agreement target met and the logit error small (30 dB) or much reduced
        return state["agreement"] >= target and (state["mse"] <= 1e-3 * var or
                                                 (chosen and state["mse"] <= mse_fraction * base_mse))

    if good_enough() or budget <= 0:
        return {"chosen": chosen, "steps": steps, "ranked": []}
    single = []
    for name in _compute_nodes(q):
        lg = _ort_logits_model(_bypass_qdq(q, f, {name}), x, threads)
        single.append((_logit_mse(lg, ref), name, agreement(lg, ref)))
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
                lg = _ort_logits_model(_bypass_qdq(q, f, set(chosen) | {name}), x, threads)
                cand = (_logit_mse(lg, ref), name, agreement(lg, ref))
                if best is None or cand[0] < best[0]:
                    best = cand
            if best is None:
                break
            mse, name, agree = best
        if state["mse"] - mse < min_gain * state["mse"]:
            steps.append({"stopped": f"best next layer {name} removes {1 - mse / max(state['mse'], 1e-12):.1%} "
                                     f"of the logit MSE (< {min_gain:.0%})"})
            break
        chosen.append(name)
        state.update(mse=mse, agreement=agree)
        steps.append({"kept_float": list(chosen), "calibration_mse": round(mse, 6),
                      "calibration_agreement": round(agree, 4), "relative_mse": round(mse / var, 6)})
    return {"chosen": chosen, "steps": steps, "ranked": [(n, round(m, 6)) for m, n, _ in single[:shortlist]]}


def _ort_prepared(ctx: ExportContext, src: Path, folder: Path) -> dict:
    """`src` pre-processed for quantization into `folder` (once per folder), with the quantizer settings
    (options onnx_int8_activations, onnx_int8_calibration, onnx_int8_reduce_range) and the models made so far."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType, quant_pre_process

    key = f"ort_quant_{folder}"
    if key not in ctx._cache:
        folder.mkdir(parents=True, exist_ok=True)
        pre = folder / "preprocessed.onnx"
        with _quiet_stdout():
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            except Exception as e:  # pre-processing is an optimisation, not a requirement
                log(f"export: onnx quant_pre_process failed ({_first_line(e)}); quantizing the plain graph")
                shutil.copyfile(src, pre)
        g = onnx.load(str(pre), load_external_data=False).graph
        outs = {o.name for o in g.output}
        ctx._cache[key] = {
            "pre": pre,
            "act": QuantType.QUInt8 if ctx.options["onnx_int8_activations"] == "uint8" else QuantType.QInt8,
            "method": {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}[ctx.options["onnx_int8_calibration"]],
            "out_ops": sorted({n.op_type for n in g.node if any(o in outs for o in n.output)}),
            "reduce_range": bool(ctx.options["onnx_int8_reduce_range"]),
            "input": _ort_session(pre, 1).get_inputs()[0].name,
            "models": {}}  # tuple(excluded nodes) -> quantized model path
    return ctx._cache[key]


def _ort_quantize(ctx: ExportContext, src: Path, folder: Path, exclude: list[str]) -> Path:
    """onnxruntime static QDQ quantization of `src` (see _ort_prepared), the layers in `exclude` kept float;
    cached per (folder, exclude)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    o = _ort_prepared(ctx, src, folder)
    if tuple(exclude) in o["models"]:
        return o["models"][tuple(exclude)]
    dst = folder / f"quantized-{len(o['models']) + 1}.onnx"
    with _quiet_stdout():
        # histogram calibrators stack the per-batch arrays: batches must have one size (batch 1)
        batch = 16 if o["method"] == CalibrationMethod.MinMax else 1
        quantize_static(str(o["pre"]), str(dst), _CalibReader(ctx.calib, o["input"], batch),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=o["act"],
                        weight_type=QuantType.QInt8, calibrate_method=o["method"], nodes_to_exclude=exclude,
                        calibration_cache_path=str(folder / f"calibration_{o['method'].name}.json"),
                        reduce_range=o["reduce_range"],
                        # the layer writing the logits keeps a float output (quantized logits clip)
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       "OpTypesToExcludeOutputQuantization": o["out_ops"]})
    o["models"][tuple(exclude)] = dst
    return dst


def int8_plan(ctx: ExportContext) -> dict:
    """The ONNX int8 model and the layers kept float (shared by onnx-int8 and tflite-int8; cached).

    The float source is ctx.int8_model() (the student, or its QAT fine-tuned copy). Static QDQ quantization:
    int8 symmetric per-channel weights (7-bit range by default: onnxruntime's U8S8 kernels sum pairs of
    products in int16 on x86 without VNNI and saturate; measured on the ELPV full run, all-int8 agreement
    90.7% -> 96.0%), 8-bit per-tensor activations (uint8 by default: the fast U8S8 path on x86) calibrated
    on training images; the layer writing the logits keeps a float output (quantized logits clip at the
    calibration range: measured 4.8 -> 1.95). Sensitive layers are then kept float by _greedy_float_layers
    (at most `int8_max_float_layers`)."""
    if "int8_plan" in ctx._cache:
        return ctx._cache["int8_plan"]
    import onnx

    pre_dir = ctx.work / ("int8_qat" if ctx.int8_model() is not ctx.model else "int8")
    target = float(ctx.options["int8_target_agreement"])
    budget = int(ctx.options["int8_max_float_layers"])
    src = ctx.onnx_fp32(int8_source=True)
    full = _ort_quantize(ctx, src, pre_dir, [])
    q_opts = _ort_prepared(ctx, src, pre_dir)
    pre, act, method, out_ops = q_opts["pre"], q_opts["act"], q_opts["method"], q_opts["out_ops"]
    n_scan = min(len(ctx.calib), int(ctx.options["int8_scan_images"]))
    t0 = time.time()
    sel = _greedy_float_layers(onnx.load(str(full)), onnx.load(str(pre)), ctx.calib[:n_scan],
                               ctx.calib_logits[:n_scan], ctx.threads, budget, target,
                               float(ctx.options["int8_mse_fraction"]),
                               min_gain=float(ctx.options["int8_min_gain"]))
    chosen = sel["chosen"]
    model = full
    if chosen:
        model = _ort_quantize(ctx, src, pre_dir, chosen)
    logits = _ort_logits(model, ctx.calib, ctx.threads)
    pre_model = onnx.load(str(pre), load_external_data=False)
    compute = _compute_nodes(pre_model)
    inits = {i.name: list(i.dims) for i in pre_model.graph.initializer}
    wshape = {n.name: inits.get(n.input[1]) for n in pre_model.graph.node if n.name in set(compute)}
    plan = {
        "model": model,
        "kept_float": chosen,
        "kept_float_index": [compute.index(c) for c in chosen if c in compute],
        "compute_layers": len(compute),
        "compute_weight_shapes": [wshape.get(c) for c in compute],
        "info": {"weights": "int8 symmetric per-channel" + (" (7-bit range: reduce_range)" if q_opts["reduce_range"] else ""),
                 "activations": f"{act.name} per-tensor",
                 "qat": ctx._cache.get("qat_info"),
                 "calibration": f"{method.name} on {len(ctx.calib)} training images",
                 "float_output": f"{', '.join(out_ops)} writing the logits (no clipping to the calibration range)",
                 "kept_float": chosen or "none",
                 "selection": {"method": "greedy by calibration logit MSE vs PyTorch (Q/DQ bypass)",
                               "images": n_scan, "budget": budget, "target_agreement": target,
                               "steps": sel["steps"], "seconds": round(time.time() - t0, 1)},
                 "calibration_agreement": round(agreement(logits, ctx.calib_logits), 4),
                 "calibration_mse": round(_logit_mse(logits, ctx.calib_logits), 6)},
    }
    ctx._cache["int8_plan"] = plan
    return plan


def onnx_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    """int8_plan's QDQ model with metadata (see int8_plan)."""
    import onnx

    plan = int8_plan(ctx)
    shutil.copyfile(plan["model"], out)
    md.embed_onnx(out, meta)
    onnx.checker.check_model(str(out), full_check=False)
    return {"converter": "onnxruntime.quantization.quantize_static (QDQ)", "opset": ONNX_OPSET,
            "quantization": {**plan["info"], "allowed_float_compute_ops": len(plan["kept_float"])}}


# ----------------------------------------------------------------------------------------------
# TFLite (onnx2tf -> SavedModel -> TFLiteConverter)


def _tflite_convert(ctx: ExportContext, int8_graph: bool, configure: Callable[[Any], None],
                    qat: Optional[bool] = None) -> bytes:
    _tf_quiet()
    import tensorflow as tf

    sm = ctx.saved_model(int8=int8_graph, qat=qat)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    # Builtin ops only: the app ships the plain LiteRT runtime, no Flex (Select TF ops) delegate.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(conv)
    with _quiet_stdout():
        return conv.convert()


def _representative(ctx: ExportContext):
    x = ctx.calib_nhwc

    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1]]
    return gen


def _write_tflite(content: bytes, out: Path, meta: dict) -> None:
    out.write_bytes(md.embed_tflite_bytes(content, meta))


def tflite_fp32(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    _write_tflite(_tflite_convert(ctx, False, lambda c: None), out, meta)
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter", "graph": "hard-sigmoid as relu6(x+3)/6"}


def tflite_fp16(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import tensorflow as tf

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    _write_tflite(_tflite_convert(ctx, False, cfg), out, meta)
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter (float16 weights)"}


def tflite_dynamic(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import tensorflow as tf

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    # the student's own weights: activations stay float here, so QAT's drift would cost more than it saves
    _write_tflite(_tflite_convert(ctx, True, cfg, qat=False), out, meta)
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter (dynamic range)",
            "quantization": {"weights": "int8 per-channel", "activations": "float32 (quantized on the fly)"}}


def _tflite_run(content: bytes, x_nhwc: np.ndarray, threads: int) -> np.ndarray:
    from export.parity import TFLiteRunner

    run = TFLiteRunner(model_content=content, threads=threads)
    return run(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))


def _tflite_compute_ops(content: bytes) -> list[dict]:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in execution order: op, output tensor name, weight shape."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=content,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    t = {d["index"]: d for d in it.get_tensor_details()}
    return [{"op": o["op_name"], "name": t[o["outputs"][0]]["name"], "weight": [int(v) for v in t[o["inputs"][1]]["shape"]]}
            for o in it._get_ops_details() if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]


def _same_layer(onnx_shape: Optional[list], tfl: dict) -> bool:
    """ONNX Conv [O, I/g, kh, kw] / Gemm [O, I] vs TFLite CONV_2D [O, kh, kw, I], DEPTHWISE [1, kh, kw, O], FC [O, I]."""
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


def full_int8_settings(ctx: ExportContext):
    """TFLiteConverter settings of the full-integer export (int8 kernels, float32 I/O); the latency
    study (export/int8_latency.py) uses the same function so it measures what the export builds."""
    import tensorflow as tf

    rep = _representative(ctx)

    def cfg(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = rep
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.float32
        c.inference_output_type = tf.float32

    return cfg


def tflite_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    """Full-integer: int8 weights (per-channel) and activations, float32 input/output (QUANTIZE/DEQUANTIZE
    at the ends, run by XNNPACK), on the XNNPACK-friendly graph (export/graph.py). The layers int8_plan keeps
    float (chosen on the ONNX graph by calibration logit MSE) are matched to the TFLite ops by execution
    order and weight shape and kept float with the TFLite quantization debugger's denylist."""
    import tensorflow as tf

    rep = _representative(ctx)  # also the quantization debugger's dataset below
    cfg = full_int8_settings(ctx)
    content = _tflite_convert(ctx, True, cfg)
    full_agree = agreement(_tflite_run(content, ctx.calib_nhwc, ctx.threads), ctx.calib_logits)
    kept, note = [], None
    plan = int8_plan(ctx) if ctx.options["int8_max_float_layers"] else None
    if plan and plan["kept_float"]:
        ops = _tflite_compute_ops(content)
        shapes = plan["compute_weight_shapes"]
        if len(ops) != len(shapes) or not all(_same_layer(shapes[i], ops[i]) for i in plan["kept_float_index"]):
            note = (f"could not match the ONNX layers kept float to TFLite ops ({len(ops)} vs {len(shapes)} "
                    "compute ops); all layers int8")
        else:
            names = [ops[i]["name"] for i in plan["kept_float_index"]]
            try:
                sm = ctx.saved_model(int8=True)
                conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                cfg(conv)
                opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names)
                with _quiet_stdout():
                    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep, debug_options=opts)
                    mixed = dbg.get_nondebug_quantized_model()
                content = mixed
                kept = [f"{ops[i]['op']} #{i} ({plan['kept_float'][k]})" for k, i in enumerate(plan["kept_float_index"])]
            except Exception as e:
                note = f"selective quantization failed ({_first_line(e)}); all layers int8"
    agree = agreement(_tflite_run(content, ctx.calib_nhwc, ctx.threads), ctx.calib_logits)
    _write_tflite(content, out, meta)
    q = {"weights": "int8 symmetric per-channel", "activations": "int8 per-tensor", "io": "float32",
         "qat": ctx._cache.get("qat_info"),
         "calibration": f"{len(ctx.calib)} training images", "kept_float": kept or "none",
         "allowed_float_compute_ops": len(kept), "calibration_agreement": round(agree, 4),
         "calibration_agreement_all_int8": round(full_agree, 4)}
    if note:
        q["note"] = note
    return {"converter": "onnx2tf -> tf.lite.TFLiteConverter (full integer)",
            "graph": "hard-swish as relu6(x+3)*(x/6), hard-sigmoid as relu6(x+3)/6 (XNNPACK-delegated)",
            "onnx2tf_strict_mode": ctx._cache.get("saved_model_int8_qat_strict", ctx._cache.get("saved_model_int8_strict")), "quantization": q}


# ----------------------------------------------------------------------------------------------
# CoreML


def _coreml_base(ctx: ExportContext):
    """mlprogram, fp16 compute, float32 NCHW input, classifier with the class labels (cached)."""
    if "coreml_fp16" in ctx._cache:
        return ctx._cache["coreml_fp16"]
    with _quiet_stdout():
        import coremltools as ct

        x = torch.from_numpy(ctx.calib[:1].copy())
        traced = torch.jit.trace(ctx.model, x)
        ml = ct.convert(
            traced, source="pytorch", convert_to="mlprogram",
            inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name="logits", dtype=np.float32)],
            classifier_config=ct.ClassifierConfig(list(ctx.labels), predicted_feature_name="classLabel"),
            compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS16,
            skip_model_load=sys.platform != "darwin")
    ctx._cache["coreml_fp16"] = ml
    return ml


def _save_coreml(ml, out: Path, meta: dict) -> None:
    md.embed_coreml(ml, meta)
    with _quiet_stdout():
        ml.save(str(out))


def coreml_fp16(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import coremltools as ct

    _save_coreml(_coreml_base(ctx), out, meta)
    return {"converter": f"coremltools {ct.__version__} (torch.jit.trace -> mlprogram, FLOAT16, iOS16)"}


def coreml_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    mode = str(ctx.options["coreml_int8_mode"])
    base = _coreml_base(ctx)
    with _quiet_stdout():
        if mode == "linear":
            conf = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=512))
            ml = cto.linear_quantize_weights(base, conf)
            how = "linear symmetric int8 per-channel weights"
        elif mode == "palettize":
            conf = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=8, mode="kmeans",
                                                                               weight_threshold=512))
            ml = cto.palettize_weights(base, conf)
            how = "8-bit k-means palettized weights"
        else:
            raise EdgekdError(f"unknown coreml_int8_mode {mode!r}; use 'linear' or 'palettize'")
    _save_coreml(ml, out, meta)
    return {"converter": f"coremltools {ct.__version__} optimize ({how})", "quantization": {"weights": how}}


CONVERTERS: dict[str, Callable[..., dict]] = {
    "onnx_fp32": onnx_fp32, "onnx_int8": onnx_int8, "tflite_fp32": tflite_fp32, "tflite_fp16": tflite_fp16,
    "tflite_int8": tflite_int8, "tflite_dynamic": tflite_dynamic, "coreml_fp16": coreml_fp16,
    "coreml_int8": coreml_int8,
}
