"""Quantization-aware fine-tuning (QAT) of the student before its int8 export.

Why: post-training int8 of MobileNetV3 moves close decisions (on ELPV's full run the all-int8 ONNX model
agreed with the float student on 90.6% of the calibration images). QAT fine-tunes a copy of the student
with int8 rounding simulated where the converters will put it, so that the weights learn to live with it;
the fine-tuned weights then go through the same post-training converters (onnxruntime quantize_static,
TFLiteConverter), which re-calibrate and quantize them.

What is simulated (torch.fake_quantize_*, straight-through gradients):
- weights of every Conv2d / Linear: symmetric per output channel ([-127, 127], or onnxruntime's
  reduce_range grid [-64, 64] when that is on: the coarser grid, so the weights suit both converters).
  BatchNorm stays frozen (eval mode) and is folded by the converters: folding multiplies each output
  channel by a constant, which a per-channel symmetric grid absorbs exactly.
- activations: 8-bit per-tensor asymmetric, ranges = min/max over the calibration images with
  activation rounding off, recomputed every epoch: what the converters' MinMax calibration will find.
  Points: the model input, each conv+BN output (after a fused ReLU), each other activation's output
  (hard-swish also its gate, x * q(hard_sigmoid(x)), as both converters compute it),
  pooling outputs, SE products, residual sums, hidden Linear outputs. The logits stay float (both int8
  artifacts keep the last layer's output float).
The loss is the logit MSE to the frozen float student (self-distillation: the target is agreement with
the student that was evaluated, not the labels). The exported weights are the fake-quantized ones, so the
converters' per-channel re-quantization of them is exact.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.parametrize as P

from edgekd.pipeline.progress import log, progress

_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.GELU, nn.Tanh)
_FUSED_ACTS = (nn.ReLU, nn.ReLU6)  # folded into the preceding conv's output range by both converters
_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)


class WeightFakeQuant(nn.Module):
    """Parametrization: symmetric per-output-channel fake quantization of a weight to [-qmax, qmax]
    (127: int8; 64: onnxruntime's reduce_range grid)."""

    def __init__(self, qmax: int = 127):
        super().__init__()
        self.qmax = int(qmax)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
        scale = (amax / self.qmax).float()
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -self.qmax, self.qmax)


class ActFakeQuant:
    """One activation quantization point: observes min/max (calibration) or fake-quantizes (training)."""

    def __init__(self, name: str):
        self.name = name
        self.lo = math.inf
        self.hi = -math.inf
        self.mode = "off"  # "observe" | "quant" | "off"

    def reset(self) -> None:
        self.lo, self.hi = math.inf, -math.inf

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            self.lo = min(self.lo, float(x.detach().min()))
            self.hi = max(self.hi, float(x.detach().max()))
            return x
        if self.mode != "quant" or not math.isfinite(self.lo):
            return x
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)  # zero must be exact (padding, ReLU)
        scale = max((hi - lo) / 255.0, 1e-8)
        zp = int(min(255, max(0, round(-lo / scale))))
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


@dataclass
class QuantPoints:
    points: list[ActFakeQuant]
    handles: list

    def set_mode(self, mode: str) -> None:
        for p in self.points:
            p.mode = mode

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _out_hook(fq: ActFakeQuant):
    def hook(_m, _inp, out):
        return fq(out) if isinstance(out, torch.Tensor) else out

    return hook


def _gate_hook(fq: ActFakeQuant):
    # hard-swish as both converters compute it: x * q(hard_sigmoid(x)) (ONNX HardSigmoid + Mul; the TFLite
    # graph's relu6(x+3) * (x/6) has the same gate grid up to a factor 6)
    def hook(_m, inp, _out):
        x = inp[0]
        return x * fq(torch.nn.functional.hardsigmoid(x))

    return hook


def _is_se(m: nn.Module) -> bool:
    # torchvision.ops.SqueezeExcitation and the like: avgpool -> fc1 -> act -> fc2 -> gate, times the input
    return all(hasattr(m, a) for a in ("avgpool", "fc1", "fc2", "scale_activation"))


def attach_quant_points(model: nn.Module, logits_layer: Optional[nn.Module] = None) -> QuantPoints:
    """Forward hooks that fake-quantize activations where the int8 converters quantize them (see module doc).
    Sets `inplace=False` on the hard-swish modules (same maths; the gate hook reads their input)."""
    points: list[ActFakeQuant] = []
    handles = []

    def add(mod: nn.Module, name: str) -> None:
        fq = ActFakeQuant(name)
        points.append(fq)
        handles.append(mod.register_forward_hook(_out_hook(fq)))

    for n, m in model.named_modules():  # the gate inside each hard-swish; first, so the output point sees it
        if isinstance(m, nn.Hardswish):
            m.inplace = False  # the hook reads the input
            fq = ActFakeQuant(n + ":gate")
            points.append(fq)
            handles.append(m.register_forward_hook(_gate_hook(fq)))
    inp = ActFakeQuant("input")
    points.append(inp)
    handles.append(model.register_forward_pre_hook(lambda _m, args: (inp(args[0]),) + tuple(args[1:])))
    names = {id(m): n for n, m in model.named_modules()}
    for parent in model.modules():
        if _is_se(parent):  # its children run avgpool, fc1, act, fc2, gate (not in registration order)
            for part in ("avgpool", "activation", "fc2", "scale_activation"):
                if part == "activation" and not isinstance(parent.activation, _FUSED_ACTS):
                    add(parent.fc1, names[id(parent)] + ".fc1")
                add(getattr(parent, part), names[id(parent)] + "." + part)
            continue
        kids = list(parent.named_children())
        for i, (_, child) in enumerate(kids):
            if list(child.children()) and not _is_se(child):
                continue
            full = names[id(child)]
            nxt = kids[i + 1][1] if i + 1 < len(kids) else None
            if _is_se(child):
                add(child, full + ":product")  # scale * input
                continue
            if child is logits_layer or isinstance(child, (nn.Dropout, nn.Identity, nn.Flatten)):
                continue
            if isinstance(child, (nn.Conv2d, nn.Linear)) and isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d)):
                continue  # BN is folded into the conv
            if isinstance(child, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)) and isinstance(
                nxt, _FUSED_ACTS
            ):
                continue
            if isinstance(child, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d) + _ACTS + _POOLS):
                add(child, full)
    for n, m in model.named_modules():  # residual sums (torchvision InvertedResidual / MBConv style)
        if getattr(m, "use_res_connect", False):
            add(m, n + ":residual")
    return QuantPoints(points, handles)


def _last_linear(model: nn.Module) -> Optional[nn.Module]:
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    return last


def _batches(n: int, bs: int, rng: np.random.Generator) -> list[np.ndarray]:
    idx = rng.permutation(n)
    return [idx[i : i + bs] for i in range(0, n, bs)]


def batched_logits(model: nn.Module, x: np.ndarray, bs: int = 64) -> np.ndarray:
    """float32 logits of normalised NCHW images, in batches, without autograd."""
    with torch.inference_mode():
        return (
            torch.cat([model(torch.from_numpy(np.ascontiguousarray(x[i : i + bs]))) for i in range(0, len(x), bs)])
            .float()
            .numpy()
        )


def _calibrate(model: nn.Module, qp: QuantPoints, calib: np.ndarray) -> None:
    for p in qp.points:
        p.reset()
    qp.set_mode("observe")
    batched_logits(model, calib)
    qp.set_mode("quant")


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0


@dataclass
class QatResult:
    model: nn.Module  # float model whose weights are on the int8 grid; same architecture as the input
    info: dict


def qat_finetune(
    model: nn.Module,
    train_x: np.ndarray,
    calib: np.ndarray,
    *,
    epochs: int = 5,
    lr: float = 2e-4,
    batch_size: int = 32,
    seed: int = 0,
    hflip: bool = True,
    weight_qmax: int = 127,
    should_stop: Optional[Callable[[], bool]] = None,
) -> QatResult:
    """Fine-tune a copy of `model` with simulated int8 (see module doc); `model` itself is untouched.

    train_x: normalised NCHW float32 training images; calib: the images the converters calibrate on;
    weight_qmax: 64 simulates onnxruntime's reduce_range weights (the coarsest grid of the int8 targets)."""
    t0 = time.time()
    ref_model = copy.deepcopy(model).eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    q = copy.deepcopy(model).eval()  # eval: BatchNorm statistics and dropout frozen, as folded at export
    for m in q.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            P.register_parametrization(m, "weight", WeightFakeQuant(weight_qmax))
    qp = attach_quant_points(q, logits_layer=_last_linear(q))
    ref_calib = batched_logits(ref_model, calib)
    _calibrate(q, qp, calib)
    sim = batched_logits(q, calib)
    before = _agree(sim, ref_calib)
    best = (float(((sim - ref_calib) ** 2).mean()), 0, copy.deepcopy(q.state_dict()))
    params = [p for p in q.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, math.ceil(len(train_x) / batch_size))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history = []
    step = 0
    for epoch in range(epochs):
        if epoch:
            _calibrate(q, qp, calib)  # ranges follow the weights, as the converters' calibration will
        losses = []
        for idx in progress(
            _batches(len(train_x), batch_size, rng), desc=f"int8 QAT epoch {epoch + 1}/{epochs}", unit="batch"
        ):
            x = torch.from_numpy(train_x[idx])
            if hflip:
                flip = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            with torch.no_grad():
                target = ref_model(x)
            loss = torch.nn.functional.mse_loss(q(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.detach().item())
            if should_stop is not None and should_stop():
                break
        _calibrate(q, qp, calib)
        sim = batched_logits(q, calib)
        agree, mse = _agree(sim, ref_calib), float(((sim - ref_calib) ** 2).mean())
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(float(np.mean(losses)), 6),
                "calibration_mse": round(mse, 6),
                "calibration_agreement": round(agree, 4),
            }
        )
        log(
            f"export: int8 QAT epoch {epoch + 1}/{epochs}: train logit MSE {np.mean(losses):.4f}; simulated int8 "
            f"on calibration images: logit MSE {mse:.4f}, agreement {agree * 100:.1f}%"
        )
        if mse < best[0]:
            best = (mse, epoch + 1, copy.deepcopy(q.state_dict()))
    qp.remove()
    # keep the best epoch by simulated-int8 logit MSE on the calibration images; epoch 0 (the student
    # itself) wins when fine-tuning made things worse
    q.load_state_dict(best[2])
    for m in q.modules():
        if P.is_parametrized(m, "weight"):
            P.remove_parametrizations(m, "weight", leave_parametrized=True)  # keep the int8-grid weights
    for p in q.parameters():
        p.requires_grad_(False)
    info = {
        "method": "QAT fine-tuning (simulated int8 weights per-channel + activations per-tensor, frozen BN), "
        "logit MSE to the float student",
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "images": int(len(train_x)),
        "weight_levels": f"[-{weight_qmax}, {weight_qmax}]",
        "quant_points": len(qp.points),
        "steps": step,
        "simulated_calibration_agreement_before": round(before, 4),
        "history": history,
        "kept_epoch": best[1],
        "seconds": round(time.time() - t0, 1),
    }
    return QatResult(model=q.eval(), info=info)
