"""THE runtime layer: load an artifact, prepare an input, run it, read its output.

Parity (export/parity.py), the benchmark worker, the Android golden vectors and the int8 latency study
all run models through these runners. Inputs are always normalised NCHW float32 batches; a runner turns
them into what the model wants. An inference is split in three, so that a benchmark can time only the
middle one:

    prepare(x)        layout change + input quantisation (work a device app does while preprocessing)
    infer(feed)       THE timed call: set the input, invoke, read the raw output
    postprocess(raw)  float32 logits [N, K] (output dequantisation)

`runner(x)` does all three for any N, in chunks the model allows: a fixed-batch model (TFLite, CoreML,
the onnx2tf graphs) gets batches of its own size with the last one zero-padded; a dynamic-batch model
gets chunks of 64.

Only the runtime a runner needs is imported, so a benchmark worker's peak RSS is the runtime's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from edgekd.pipeline.errors import EdgekdError

ModelSource = Union[str, Path, bytes]

KIND_BY_SUFFIX: dict[str, str] = {
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".mlpackage": "coreml",
    ".mlmodel": "coreml",
    ".pt": "torch",
}
CHUNK = 64  # images per call for dynamic-batch models
COREML_OFF_MACOS = "prediction needs macOS"


class Unsupported(EdgekdError):
    """This machine cannot run the artifact (CoreML prediction off macOS)."""


# ----------------------------------------------------------------------------------------------
# int8 input/output


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """THE int8 input rounding rule: q = round(x / scale) + zero_point, clipped to the dtype's range.

    round() is half away from zero (std::round: TFLite's reference kernels and the Android Java core),
    not numpy's half-to-even np.rint. x / scale is computed in float32 like both of them; the rounding in
    float64, where v + 0.5 is exact (in float32, 0.49999997 + 0.5 rounds up to 1)."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    v = (np.asarray(x, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 (q - zero_point) * scale."""
    return (np.asarray(q).astype(np.int32) - int(zero_point)).astype(np.float32) * np.float32(scale)


# ----------------------------------------------------------------------------------------------
# the runner protocol


def auto_layout(shape: Any) -> str:
    """NHWC when the last axis looks like channels (1 or 3) and axis 1 does not."""
    try:
        s = [int(d) if isinstance(d, (int, np.integer)) else -1 for d in shape]
    except TypeError:
        return "NCHW"
    if len(s) == 4 and s[-1] in (1, 3) and s[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """A normalised NCHW float32 batch in `layout` (contiguous)."""
    x = np.asarray(x, dtype=np.float32)
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(x)


class Runner:
    kind = "?"
    layout = "NCHW"
    batch: Optional[int] = None  # the model's fixed batch size; None: any batch (chunks of CHUNK)

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def prepare(self, x: np.ndarray) -> Any:
        return to_layout(x, self.layout)

    def infer(self, feed: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def postprocess(self, raw: Any) -> np.ndarray:
        out = np.asarray(raw, dtype=np.float32)
        return out.reshape(len(out), -1) if out.ndim > 2 else out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.batch or CHUNK
        outs = []
        for i in range(0, len(x), step):
            xb = x[i : i + step]
            n = len(xb)
            if self.batch and n < self.batch:  # pad the last chunk of a fixed-batch model
                xb = np.concatenate([xb, np.zeros((self.batch - n,) + xb.shape[1:], xb.dtype)])
            outs.append(self.postprocess(self.infer(self.prepare(xb)))[:n])
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _fixed_batch(dim: Any) -> Optional[int]:
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else None


# ----------------------------------------------------------------------------------------------
# onnxruntime


# THE onnxruntime session settings (recorded in every runner's info and in the bench report): all graph
# optimizations (constant folding, Conv+activation fusion, NCHWc layout for the CPU kernels), one stream of
# ops, and worker threads that sleep instead of spinning between ops: with 2 threads on a shared 2-core CPU,
# spinning made the batch-1 student slower (interleaved, benchmarks/results/converter-choice.md; with 1 thread
# there are no worker threads to spin). The CPU provider is the only local one the installed wheel offers
# (the others, e.g. Azure, are remote).
ORT_SESSION_CONFIG: dict[str, str] = {"session.intra_op.allow_spinning": "0"}
ORT_PROVIDERS = ["CPUExecutionProvider"]


def runtime_options() -> dict:
    """How the runtime layer sets up each runtime (for the bench report)."""
    out: dict[str, Any] = {
        "onnxruntime": {
            "providers": list(ORT_PROVIDERS),
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "execution_mode": "ORT_SEQUENTIAL",
            "intra_op_num_threads": "the profile's threads",
            "inter_op_num_threads": 1,
            "session_config": dict(ORT_SESSION_CONFIG),
        },
        "litert": {"delegate": "XNNPACK (default)", "num_threads": "the profile's threads"},
    }
    try:
        import onnxruntime as ort

        out["onnxruntime"]["available_providers"] = list(ort.get_available_providers())
    except ImportError:
        pass
    return out


class OnnxRunner(Runner):
    """onnxruntime CPU session; `model` a path, the file's bytes or an onnx.ModelProto."""

    kind = "onnx"

    def __init__(
        self,
        model: ModelSource,
        threads: int,
        layout: Optional[str] = None,
        session_config: Optional[dict[str, str]] = None,
    ):
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        config = dict(ORT_SESSION_CONFIG if session_config is None else session_config)
        for k, v in config.items():
            so.add_session_config_entry(k, v)
        if hasattr(model, "SerializeToString"):  # an in-memory onnx.ModelProto
            model = model.SerializeToString()
        src = model if isinstance(model, bytes) else str(model)
        self.sess = ort.InferenceSession(src, so, providers=ORT_PROVIDERS)
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.layout = layout or auto_layout(inp.shape)
        self.batch = _fixed_batch(inp.shape[0]) if inp.shape else None
        self.dtype = {
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
            "tensor(uint8)": np.uint8,
            "tensor(int8)": np.int8,
        }.get(inp.type, np.float32)
        self.info = {
            "runtime": "onnxruntime",
            "runtime_version": ort.__version__,
            "layout": self.layout,
            "input_type": inp.type,
            "intra_op_num_threads": max(1, int(threads)),
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "execution_mode": "ORT_SEQUENTIAL",
            "providers": list(self.sess.get_providers()),
            "session_config": config,
        }

    def prepare(self, x: np.ndarray) -> Any:
        return {self.input_name: to_layout(x, self.layout).astype(self.dtype, copy=False)}

    def infer(self, feed: Any) -> Any:
        return self.sess.run(None, feed)[0]


# ----------------------------------------------------------------------------------------------
# LiteRT


def _litert_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:
        return None


def tflite_interpreter(model: ModelSource, threads: int = 1, delegates: bool = True):
    """An allocated LiteRT interpreter (ai_edge_litert; tflite-runtime 2.14 does not work with numpy 2
    and current op versions). delegates=False: builtin kernels only, no XNNPACK, so that every op and
    tensor of the file is visible (op inspection)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw: dict[str, Any] = {"num_threads": max(1, int(threads))}
    if not delegates:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, bytes):
        it = Interpreter(model_content=model, **kw)
    else:
        it = Interpreter(model_path=str(model), **kw)
    it.allocate_tensors()
    return it


def tflite_ops(interpreter) -> list[dict]:
    """The interpreter's ops in execution order (op_name, inputs, outputs; DELEGATE for a delegated
    partition). LiteRT exposes them only through a private method: this is the one place that calls it."""
    return interpreter._get_ops_details()


class TfliteRunner(Runner):
    """LiteRT interpreter with its default XNNPACK delegate; fixed batch (the exported shape)."""

    kind = "tflite"

    def __init__(self, model: ModelSource, threads: int, layout: Optional[str] = None):
        super().__init__()
        self.interpreter = tflite_interpreter(model, threads)
        self._details()
        shape = list(self.input_details["shape"])
        self.layout = layout or auto_layout(shape)
        self.batch = _fixed_batch(shape[0]) if shape else None
        self.in_dtype = np.dtype(self.input_details["dtype"])
        self.in_q = self.input_details.get("quantization") or (0.0, 0)
        self.out_q = self.output_details.get("quantization") or (0.0, 0)
        self.info = {
            "runtime": "litert",
            "runtime_version": _litert_version(),
            "layout": self.layout,
            "input_type": self.in_dtype.name,
            "num_threads": max(1, int(threads)),
            "input_quantization": [float(self.in_q[0]), int(self.in_q[1])],
        }

    def _details(self) -> None:
        self.input_details = self.interpreter.get_input_details()[0]
        self.output_details = self.interpreter.get_output_details()[0]

    def prepare(self, x: np.ndarray) -> Any:
        x = to_layout(x, self.layout)
        if self.in_dtype in (np.int8, np.uint8):
            x = quantize(x, self.in_q[0], self.in_q[1], self.in_dtype)
        elif self.in_dtype != np.float32:
            x = x.astype(self.in_dtype)
        if tuple(x.shape) != tuple(self.input_details["shape"]):  # a batch the file was not exported with
            self.interpreter.resize_tensor_input(self.input_details["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self._details()
        return x

    def infer(self, feed: Any) -> Any:
        self.interpreter.set_tensor(self.input_details["index"], feed)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_details["index"])

    def postprocess(self, raw: Any) -> np.ndarray:
        out = np.asarray(raw)
        if out.dtype in (np.int8, np.uint8, np.int16):  # quantized logits
            out = dequantize(out, self.out_q[0], self.out_q[1])
        return super().postprocess(out)


# ----------------------------------------------------------------------------------------------
# PyTorch


class TorchRunner(Runner):
    kind = "torch"

    def __init__(self, path: ModelSource, threads: int, spec: Optional[dict] = None):
        super().__init__()
        import torch

        spec = spec or {}
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        builder = spec.get("builder", "torchscript")
        if builder == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu")
        else:
            from edgekd.pipeline.models import build_student, build_teacher, load_state_dict_file

            k = int(spec["num_classes"])
            if builder == "teacher":
                model, _ = build_teacher(spec["arch"], None, k, int(spec["image_size"]))
            elif builder == "student":
                model = build_student(spec["arch"], k, float(spec.get("width_mult", 1.0)))
            else:
                raise ValueError(f"unknown torch builder {builder!r}")
            model.load_state_dict(load_state_dict_file(path))
        model.eval()
        self.channels_last = bool(spec.get("channels_last", False))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.torch = torch
        self.info = {
            "runtime": "pytorch",
            "runtime_version": torch.__version__,
            "layout": "NCHW",
            "channels_last": self.channels_last,
            "num_threads": torch.get_num_threads(),
            "builder": builder,
        }

    def prepare(self, x: np.ndarray) -> Any:
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.channels_last:
            t = t.contiguous(memory_format=self.torch.channels_last)
        return t

    def infer(self, feed: Any) -> Any:
        with self.torch.inference_mode():
            return self.model(feed)

    def postprocess(self, raw: Any) -> np.ndarray:
        return super().postprocess(raw.float().numpy())


# ----------------------------------------------------------------------------------------------
# CoreML


def coreml_labels(spec) -> list[str]:
    """Class labels of a CoreML spec: in an mlprogram they are the `classes` operand of the `classify` op."""
    t = spec.WhichOneof("Type")
    if t == "mlProgram":
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    if op.type != "classify" or "classes" not in op.inputs:
                        continue
                    for arg in op.inputs["classes"].arguments:
                        if arg.WhichOneof("binding") == "value":
                            return [_mil_scalar(v.immediateValue) for v in arg.value.immediateValue.list.values]
        return []
    inner = getattr(spec, t)
    if hasattr(inner, "stringClassLabels") and len(inner.stringClassLabels.vector):
        return list(inner.stringClassLabels.vector)
    if hasattr(inner, "int64ClassLabels") and len(inner.int64ClassLabels.vector):
        return [str(v) for v in inner.int64ClassLabels.vector]
    return []


def _mil_scalar(iv) -> str:
    t = iv.tensor
    if t.strings.values:
        return str(t.strings.values[0])
    if t.ints.values:
        return str(t.ints.values[0])
    if t.longInts.values:
        return str(t.longInts.values[0])
    return ""


class CoremlRunner(Runner):
    """coremltools prediction (macOS only), CPU compute units. A classifier's per-class scores (a dict
    keyed by label) are read back in label order."""

    kind = "coreml"

    def __init__(self, path: ModelSource, threads: int, layout: Optional[str] = None):
        super().__init__()
        if sys.platform != "darwin":
            raise Unsupported("CoreML prediction needs macOS (coremltools can only validate the spec on Linux)")
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = self.model.get_spec()
        desc = spec.description
        self.input_name = desc.input[0].name
        shape = list(desc.input[0].type.multiArrayType.shape)
        self.batch = _fixed_batch(shape[0]) if shape else 1
        self.labels = coreml_labels(spec)
        self.output_name = desc.predictedProbabilitiesName or desc.output[0].name
        self.layout = layout or "NCHW"
        self.info = {
            "runtime": "coreml",
            "runtime_version": ct.__version__,
            "layout": self.layout,
            "compute_units": "CPU_ONLY",
            "note": "CoreML chooses its own thread count",
        }

    def prepare(self, x: np.ndarray) -> Any:
        return {self.input_name: to_layout(x, self.layout)}

    def infer(self, feed: Any) -> Any:
        return self.model.predict(feed)[self.output_name]

    def postprocess(self, raw: Any) -> np.ndarray:
        if isinstance(raw, dict):  # classifier scores for one image
            return np.asarray([[float(raw[lab]) for lab in self.labels]], dtype=np.float32)
        return super().postprocess(raw)


# ----------------------------------------------------------------------------------------------
# entry points


def can_run(kind: str) -> Optional[str]:
    """None if this machine can run `kind`, else the reason it cannot."""
    if kind == "coreml" and sys.platform != "darwin":
        return COREML_OFF_MACOS
    return None


def make_runner(spec: dict, threads: int) -> Runner:
    """spec: {"kind": onnx|tflite|coreml|torch, "path", "layout" (optional), ...torch builder fields}."""
    kind, path = spec["kind"], spec["path"]
    if not Path(path).exists():
        raise EdgekdError(f"artifact not found: {path}")
    layout = spec.get("layout")
    if kind == "onnx":
        return OnnxRunner(path, threads, layout)
    if kind == "tflite":
        return TfliteRunner(path, threads, layout)
    if kind == "coreml":
        return CoremlRunner(path, threads, layout)
    if kind == "torch":
        return TorchRunner(path, threads, spec)
    raise ValueError(f"unknown runner kind {kind!r}")


def load_runner(path: str | Path, threads: int = 2) -> Runner:
    """The runner of an artifact file, by suffix (.onnx, .tflite, .mlpackage/.mlmodel, TorchScript .pt)."""
    p = Path(path)
    kind = KIND_BY_SUFFIX.get(p.suffix)
    if kind is None:
        raise EdgekdError(f"no runtime for {p.name} (expected .onnx, .tflite or .mlpackage)")
    return make_runner({"kind": kind, "path": str(p)}, threads)
