"""Checking a CoreML file on a machine without Core ML (Linux): read the real .mlpackage back and run its
MIL program with an independent reference interpreter.

Core ML's own runtime only exists on Apple platforms, so off macOS nobody can say what Core ML computes
with a file. What can be checked is the file itself: `coremltools`' milproto loader reads the saved
program and its weights (weights.bin, decompressed by coremltools' own constexpr_* ops: int8 affine
dequantization, palettization LUTs), and `interpret` evaluates that program op by op with PyTorch kernels,
rounding every fp16 value to fp16 as the program declares it. Comparing those logits with the PyTorch
student's on the test images catches a wrong conversion, wrong weights, a broken quantization or wrong
labels/preprocessing in the file; it does not check Apple's kernels (their fp16 accumulation, the
Neural Engine). Hence the status `weights_checked`: never `passed`/`ok`, and no goal or headline uses it.

An op outside the small set a MobileNetV3 program uses raises UncheckedOp: the artifact is `unverified`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.pipeline.errors import EdgekdError


class UncheckedOp(EdgekdError):
    """The program uses an op this interpreter does not implement: the file stays unverified."""


def load_program(path: str | Path):
    """(MIL main function, its input name) of a saved .mlpackage, read with coremltools' milproto loader."""
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.models.utils import load_spec

    path = Path(path)
    spec = load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise UncheckedOp(f"{path.name} is a {spec.WhichOneof('Type')}, not an mlprogram")
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    prog = milproto_load(spec, spec.specificationVersion, str(weights))
    fn = prog.functions["main"]
    return fn, next(iter(fn.inputs))


def _is_fp16(var) -> bool:
    from coremltools.converters.mil.mil import types

    try:
        return var.dtype == types.fp16
    except Exception:
        return False


def _const(var) -> Any:
    return var.val if var is not None and var.val is not None else None


def interpret(path: str | Path, x: np.ndarray, fn_input=None) -> np.ndarray:
    """Float32 logits [N, K] of the CoreML classifier at `path` on normalised NCHW float32 images `x`."""
    fn, in_name = fn_input or load_program(path)
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = []
    for i in range(len(x)):  # the program has a fixed batch of 1
        outs.append(_run(fn, in_name, torch.from_numpy(x[i : i + 1])))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def _run(fn, in_name: str, x: torch.Tensor) -> np.ndarray:
    env: dict[str, torch.Tensor] = {in_name: x}
    logits_name = None

    def val(var) -> torch.Tensor:
        if var.name in env:
            return env[var.name]
        c = _const(var)
        if c is None:
            raise UncheckedOp(f"value of {var.name} unknown")
        t = torch.as_tensor(np.asarray(c, dtype=np.float32) if np.asarray(c).dtype.kind == "f" else np.asarray(c))
        env[var.name] = t.float() if t.is_floating_point() else t
        return env[var.name]

    for op in fn.operations:
        t = op.op_type
        a = op.inputs
        if t == "const":
            continue
        if t.startswith("constexpr_"):
            w = op.materialized_val_inference()  # coremltools' own decompression of the stored weights
            w = w[0] if isinstance(w, (tuple, list)) else w
            env[op.outputs[0].name] = torch.as_tensor(np.asarray(w, dtype=np.float32))
            continue
        if t == "classify":
            logits_name = a["probabilities"].name
            continue
        if t == "cast":
            y = val(a["x"]).float()
        elif t == "conv":
            y = _conv(op, val)
        elif t == "linear":
            y = F.linear(val(a["x"]), val(a["weight"]), val(a["bias"]) if "bias" in a else None)
        elif t == "matmul":
            xa, yb = val(a["x"]), val(a["y"])
            if bool(_const(a.get("transpose_x"))):
                xa = xa.transpose(-1, -2)
            if bool(_const(a.get("transpose_y"))):
                yb = yb.transpose(-1, -2)
            y = xa @ yb
        elif t == "relu":
            y = F.relu(val(a["x"]))
        elif t == "clip":
            y = val(a["x"]).clamp(float(_const(a["alpha"])), float(_const(a["beta"])))
        elif t == "thresholded_relu":
            v = val(a["x"])
            y = torch.where(v >= float(_const(a["alpha"])), v, torch.zeros_like(v))
        elif t == "sigmoid_hard":
            y = (float(_const(a["alpha"])) * val(a["x"]) + float(_const(a["beta"]))).clamp(0.0, 1.0)
        elif t == "sigmoid":
            y = torch.sigmoid(val(a["x"]))
        elif t in ("add", "sub", "mul", "real_div", "maximum", "minimum"):
            f = {
                "add": torch.add,
                "sub": torch.sub,
                "mul": torch.mul,
                "real_div": torch.div,
                "maximum": torch.maximum,
                "minimum": torch.minimum,
            }[t]
            y = f(val(a["x"]), val(a["y"]))
        elif t == "reduce_mean":
            axes = [int(v) for v in np.atleast_1d(_const(a["axes"]))]
            y = val(a["x"]).mean(dim=axes, keepdim=bool(_const(a.get("keep_dims"))))
        elif t == "avg_pool" and str(_const(a.get("pad_type"))) == "valid":
            y = F.avg_pool2d(
                val(a["x"]), [int(v) for v in _const(a["kernel_sizes"])], [int(v) for v in _const(a["strides"])]
            )
        elif t == "reshape":
            y = val(a["x"]).reshape([int(v) for v in _const(a["shape"])])
        elif t == "squeeze":
            axes = _const(a.get("axes"))
            v = val(a["x"])
            y = v.squeeze() if axes is None else v.squeeze(tuple(int(i) for i in np.atleast_1d(axes)))
        elif t == "softmax":
            y = torch.softmax(val(a["x"]), dim=int(_const(a["axis"])))
        else:
            raise UncheckedOp(f"the program uses op {t!r}, which edgekd's reference interpreter does not implement")
        out = op.outputs[0]
        env[out.name] = y.half().float() if _is_fp16(out) else y.float()
    if logits_name is None:
        logits_name = fn.outputs[0].name
    if logits_name not in env:
        raise UncheckedOp(f"the program's logits {logits_name!r} were not computed")
    return env[logits_name].reshape(1, -1).numpy().astype(np.float32)


def _conv(op, val) -> torch.Tensor:
    a = op.inputs
    x, w = val(a["x"]), val(a["weight"])
    b = val(a["bias"]) if "bias" in a and a["bias"] is not None else None
    strides = [int(v) for v in _const(a["strides"])] if "strides" in a else [1, 1]
    dil = [int(v) for v in _const(a["dilations"])] if "dilations" in a else [1, 1]
    groups = int(_const(a["groups"])) if "groups" in a else 1
    pad_type = str(_const(a["pad_type"])) if "pad_type" in a else "valid"
    if pad_type == "custom":
        t, bt, lf, rt = [int(v) for v in _const(a["pad"])]
        x = F.pad(x, (lf, rt, t, bt))
    elif pad_type == "same":
        kh, kw = w.shape[-2:]
        ph, pw = max(0, (kh - 1) * dil[0]), max(0, (kw - 1) * dil[1])
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    elif pad_type != "valid":
        raise UncheckedOp(f"conv pad_type {pad_type!r} is not implemented")
    return F.conv2d(x, w, b, stride=strides, dilation=dil, groups=groups)


def weight_summary(fn) -> dict:
    """What the stored weights are: float const weight tensors (rank >= 2) by dtype, and the compressed
    (constexpr_*) weights by op."""
    kinds: dict[str, int] = {}
    for op in fn.operations:
        if op.op_type.startswith("constexpr_"):
            kinds[op.op_type] = kinds.get(op.op_type, 0) + 1
        elif op.op_type == "const":
            v = _const(op.outputs[0])
            if isinstance(v, np.ndarray) and v.ndim >= 2 and v.dtype.kind == "f":
                kinds[f"const:{v.dtype.name}"] = kinds.get(f"const:{v.dtype.name}", 0) + 1
    return kinds
