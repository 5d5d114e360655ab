"""Converter-friendly rewrites of the student's activations (same maths, different op pattern).

Why: the TFLite converter fuses `x*relu6(x+3)/6` into HARD_SWISH and `clip(x/6+0.5,0,1)` into
RELU_0_TO_1. In LiteRT's XNNPACK delegate (the default CPU path) RELU_0_TO_1 is not delegated at all
and int8 HARD_SWISH is not delegated either: each such op falls back to TFLite's own kernel and splits
the graph into another delegate partition. MobileNetV3-Small has 9 hard-sigmoids and 19 hard-swishes,
so an int8 model ran as 28 XNNPACK partitions with 27 single-threaded fallbacks (measured; see
benchmarks/results/int8_latency.md). Rewriting

    hard_sigmoid(x) = relu6(x + 3) * (1/6)          -> ADD(fused RELU6) + MUL, both delegated
    hard_swish(x)   = relu6(x + 3) * (x * (1/6))     -> ADD(RELU6) + MUL + MUL, not matched as HARD_SWISH

keeps every op inside one XNNPACK partition. For float artifacts hard-swish stays as it is (XNNPACK runs
float HARD_SWISH fused); only hard-sigmoid is rewritten, and the classifier's hard-swish (after a Linear) is
computed on an (N, C, 1, 1) view (HardSwish4d): on the 2-D tensor onnx2tf writes x*relu6(x+3)/6 and the
converter folds the +3 into a second copy of the preceding 576x1024 FULLY_CONNECTED (3 FCs + MUL instead of
2 FCs + HARD_SWISH; found by counting ops against litert-torch's direct conversion, issue 16).

The operand order of the last MUL matters for int8 accuracy, not only for pattern matching. On the ELPV
full run's student (all-int8, 656 test images, agreement with the float student): native HARD_SWISH
96.3% (19 ops outside XNNPACK), relu6(x+3)*(x/6) 96.0% (one partition), (x/6)*relu6(x+3) 93.3% (one
partition), x*hardsigmoid(x) 93.6%.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class HardSigmoidRelu6(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * (1.0 / 6.0)


class HardSwishUnfused(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * (x * (1.0 / 6.0))


class HardSwish4d(nn.Module):
    """Float hard-swish after a Linear on an (N, C, 1, 1) view: stays one HARD_SWISH op (two free RESHAPEs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x.reshape(x.shape[0], -1, 1, 1)).flatten(1)


class HardSwishUnfused4d(nn.Module):
    """Hard-swish after a Linear, computed on an (N, C, 1, 1) view: on the 2-D tensor the converter folds
    the +3 and the 1/6 into extra copies of the preceding FULLY_CONNECTED (3 instead of 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(x.shape[0], -1, 1, 1)
        return (F.relu6(y + 3.0) * (y * (1.0 / 6.0))).flatten(1)


def _swap(module: nn.Module, hardswish: bool, in_classifier: bool = False) -> int:
    n = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Hardsigmoid):
            setattr(module, name, HardSigmoidRelu6())
            n += 1
        elif hardswish and isinstance(child, nn.Hardswish):
            setattr(module, name, HardSwishUnfused4d() if in_classifier else HardSwishUnfused())
            n += 1
        elif in_classifier and isinstance(child, nn.Hardswish):
            setattr(module, name, HardSwish4d())
            n += 1
        else:
            n += _swap(child, hardswish, in_classifier or name == "classifier")
    return n


def xnnpack_friendly(model: nn.Module, int8: bool) -> nn.Module:
    """A copy of `model` with hard-sigmoid (and, for int8, hard-swish) rewritten; the original is untouched."""
    m = copy.deepcopy(model).eval()
    _swap(m, hardswish=int8)
    return m
