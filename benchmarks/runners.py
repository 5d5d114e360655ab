"""Runtimes the benchmark worker drives: onnxruntime, LiteRT (ai_edge_litert), PyTorch, CoreML.

A runner splits an inference into `prepare` (layout change + input quantisation: work a
device app does while it preprocesses), `infer` (the timed part: set input, invoke, read
output) and `postprocess` (dequantise output logits). Inputs are always normalised NCHW float32
batches; the runner converts them to what the model wants.

Only the runtime a runner needs is imported, so the worker's peak RSS is the runtime's own.
This overlaps with export/parity.py's `load_runtime` (written separately); see the report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np


class Unsupported(Exception):
    """This artifact cannot be run here (e.g. CoreML prediction off macOS)."""


class Runner:
    kind = "?"

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def prepare(self, x: np.ndarray) -> Any:
        return np.ascontiguousarray(x, dtype=np.float32)

    def infer(self, feed: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def postprocess(self, out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.postprocess(self.infer(self.prepare(x)))


def _auto_layout(shape: Any) -> str:
    """NHWC when the last axis looks like channels and axis 1 does not."""
    try:
        s = [int(d) if isinstance(d, (int, np.integer)) else -1 for d in shape]
    except TypeError:
        return "NCHW"
    if len(s) == 4 and s[-1] in (1, 3) and s[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def _to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(x)


# ----------------------------------------------------------------------------------------
# onnxruntime


class OnnxRunner(Runner):
    kind = "onnx"

    def __init__(self, path: str, threads: int, layout: Optional[str] = None):
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.layout = layout or _auto_layout(inp.shape)
        self.dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                      "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(inp.type, np.float32)
        self.info = {"runtime": "onnxruntime", "runtime_version": ort.__version__, "layout": self.layout,
                     "input_type": inp.type, "intra_op_num_threads": threads}

    def prepare(self, x: np.ndarray) -> Any:
        return {self.input_name: _to_layout(x, self.layout).astype(self.dtype, copy=False)}

    def infer(self, feed: Any) -> Any:
        return self.sess.run(None, feed)[0]


# ----------------------------------------------------------------------------------------
# LiteRT


class TfliteRunner(Runner):
    kind = "tflite"

    def __init__(self, path: str, threads: int, layout: Optional[str] = None):
        super().__init__()
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.layout = layout or _auto_layout(self.inp["shape"])
        self.in_dtype = self.inp["dtype"]
        self.in_q = self.inp.get("quantization") or (0.0, 0)
        self.out_q = self.out.get("quantization") or (0.0, 0)
        try:
            from importlib.metadata import version

            v = version("ai-edge-litert")
        except Exception:
            v = None
        self.info = {"runtime": "litert", "runtime_version": v, "layout": self.layout,
                     "input_type": np.dtype(self.in_dtype).name, "num_threads": threads,
                     "input_quantization": [float(self.in_q[0]), int(self.in_q[1])]}

    def prepare(self, x: np.ndarray) -> Any:
        x = _to_layout(x, self.layout)
        if self.in_dtype in (np.int8, np.uint8):
            scale, zp = self.in_q
            info = np.iinfo(self.in_dtype)
            x = np.clip(np.rint(x / scale + zp), info.min, info.max).astype(self.in_dtype)
        elif self.in_dtype != np.float32:
            x = x.astype(self.in_dtype)
        if tuple(x.shape) != tuple(self.inp["shape"]):
            self.it.resize_tensor_input(self.inp["index"], list(x.shape))
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()[0]
            self.out = self.it.get_output_details()[0]
        return x

    def infer(self, feed: Any) -> Any:
        self.it.set_tensor(self.inp["index"], feed)
        self.it.invoke()
        return self.it.get_tensor(self.out["index"])

    def postprocess(self, out: Any) -> np.ndarray:
        out = np.asarray(out)
        if out.dtype in (np.int8, np.uint8, np.int16):
            scale, zp = self.out_q
            return ((out.astype(np.float32) - zp) * scale).astype(np.float32)
        return out.astype(np.float32)


# ----------------------------------------------------------------------------------------
# PyTorch


class TorchRunner(Runner):
    kind = "torch"

    def __init__(self, path: str, threads: int, spec: dict):
        super().__init__()
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        builder = spec.get("builder", "torchscript")
        if builder == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu")
        else:
            from pipeline.models import build_student, build_teacher, load_state_dict_file

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
        self.info = {"runtime": "pytorch", "runtime_version": torch.__version__, "layout": "NCHW",
                     "channels_last": self.channels_last, "num_threads": torch.get_num_threads(),
                     "builder": builder}

    def prepare(self, x: np.ndarray) -> Any:
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.channels_last:
            t = t.contiguous(memory_format=self.torch.channels_last)
        return t

    def infer(self, feed: Any) -> Any:
        with self.torch.inference_mode():
            return self.model(feed)

    def postprocess(self, out: Any) -> np.ndarray:
        return out.float().numpy()


# ----------------------------------------------------------------------------------------
# CoreML


class CoremlRunner(Runner):
    kind = "coreml"

    def __init__(self, path: str, threads: int, layout: Optional[str] = None):
        super().__init__()
        if sys.platform != "darwin":
            raise Unsupported("prediction needs macOS")
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        desc = self.model.get_spec().description
        self.input_name = desc.input[0].name
        self.output_name = desc.output[0].name
        self.layout = layout or "NCHW"
        self.info = {"runtime": "coreml", "runtime_version": ct.__version__, "layout": self.layout,
                     "compute_units": "CPU_ONLY", "note": "CoreML chooses its own thread count"}

    def prepare(self, x: np.ndarray) -> Any:
        return {self.input_name: _to_layout(x, self.layout)}

    def infer(self, feed: Any) -> Any:
        return self.model.predict(feed)[self.output_name]


def make_runner(spec: dict, threads: int) -> Runner:
    """spec: {"kind": onnx|tflite|coreml|torch, "path", "layout" (optional), ...torch builder fields}."""
    kind, path = spec["kind"], spec["path"]
    if not Path(path).exists():
        raise FileNotFoundError(f"artifact not found: {path}")
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


def can_run(kind: str) -> Optional[str]:
    """None if this machine can run `kind`, else the reason it cannot."""
    if kind == "coreml" and sys.platform != "darwin":
        return "prediction needs macOS"
    return None
