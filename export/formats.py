"""THE table of export formats: it drives export, argument checks, parity gates, the benchmark and the tests.

Each row names the container format, the numeric precision, the file suffix, the converter (a name
in export.converters.CONVERTERS), the runtime that runs it for parity, the gate class and the
Python modules the converter needs (a missing one makes the artifact "skipped", not a traceback).
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from edgekd.pipeline.errors import EdgekdError


@dataclass(frozen=True)
class FormatSpec:
    name: str  # folder name under RUN_DIR/exports/ and the --formats value
    format: str  # "onnx" | "tflite" | "coreml"
    precision: str  # "fp32" | "fp16" | "int8" | "dynamic-int8"
    suffix: str  # model file suffix: model<suffix>
    converter: str  # key of export.converters.CONVERTERS
    runtime: str  # what runs it for parity: "onnxruntime" | "litert" | "coreml"
    gate: str  # gate class: "fp32" | "fp16" | "int8"
    layout: str  # input layout of the artifact: "NCHW" | "NHWC"
    needs: tuple[str, ...] = field(default_factory=tuple)  # importable modules the converter needs
    description: str = ""
    # The benchmark headline speaks for the measured artifact of lowest rank (None: never the headline).
    headline_rank: Optional[int] = None

    @property
    def filename(self) -> str:
        return f"model{self.suffix}"

    def missing_modules(self) -> list[str]:
        return [m for m in self.needs if not module_available(m)]


FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in (
        FormatSpec(
            "onnx",
            "onnx",
            "fp32",
            ".onnx",
            "onnx_fp32",
            "onnxruntime",
            "fp32",
            "NCHW",
            ("onnx", "onnxruntime"),
            "torch.onnx.export (dynamo), onnx.checker full_check, dynamic batch",
            headline_rank=4,
        ),
        FormatSpec(
            "onnx-int8",
            "onnx",
            "int8",
            ".onnx",
            "onnx_int8",
            "onnxruntime",
            "int8",
            "NCHW",
            ("onnx", "onnxruntime"),
            "onnxruntime static quantization, QDQ, per-channel int8 weights, calibrated on training images",
            headline_rank=3,
        ),
        FormatSpec(
            "tflite",
            "tflite",
            "fp32",
            ".tflite",
            "tflite_fp32",
            "litert",
            "fp32",
            "NHWC",
            ("onnx", "tensorflow", "onnx2tf", "ai_edge_litert"),
            "fastest passing of onnx2tf -> TFLiteConverter and litert-torch (export.tflite_converters), NHWC, batch 1",
            headline_rank=2,
        ),
        FormatSpec(
            "tflite-fp16",
            "tflite",
            "fp16",
            ".tflite",
            "tflite_fp16",
            "litert",
            "fp16",
            "NHWC",
            ("onnx", "tensorflow", "onnx2tf", "ai_edge_litert"),
            "fp16 weights, fp32 compute on CPU; fastest passing converter candidate like tflite",
            headline_rank=1,
        ),
        FormatSpec(
            "tflite-int8",
            "tflite",
            "int8",
            ".tflite",
            "tflite_int8",
            "litert",
            "int8",
            "NHWC",
            ("onnx", "tensorflow", "onnx2tf", "ai_edge_litert"),
            "full-integer (int8 weights and activations, float32 I/O), representative data from training "
            "images, XNNPACK-friendly hard-swish",
            headline_rank=0,
        ),
        FormatSpec(
            "tflite-dynamic",
            "tflite",
            "dynamic-int8",
            ".tflite",
            "tflite_dynamic",
            "litert",
            "int8",
            "NHWC",
            ("onnx", "tensorflow", "onnx2tf", "ai_edge_litert"),
            "dynamic-range: int8 weights, float activations",
        ),
        FormatSpec(
            "coreml",
            "coreml",
            "fp16",
            ".mlpackage",
            "coreml_fp16",
            "coreml",
            "fp16",
            "NCHW",
            ("coremltools",),
            "coremltools mlprogram from the traced student, fp16 compute",
            headline_rank=6,
        ),
        FormatSpec(
            "coreml-int8",
            "coreml",
            "int8",
            ".mlpackage",
            "coreml_int8",
            "coreml",
            "int8",
            "NCHW",
            ("coremltools",),
            "coremltools.optimize int8 weight quantization (or palettization)",
            headline_rank=5,
        ),
    )
}

# Display names for reports and the headline, per container format and per runtime.
FORMAT_LABELS: dict[str, str] = {"onnx": "ONNX", "tflite": "TFLite", "coreml": "Core ML"}
RUNTIME_LABELS: dict[str, str] = {"onnxruntime": "onnxruntime", "litert": "LiteRT", "coreml": "Core ML"}

# Parity gates per gate class (cfg.export.gates overrides any key; "<artifact>_<key>" overrides one artifact).
# agreement: top-1 agreement with the PyTorch student (fraction); accuracy_drop: max points below the student.
DEFAULT_GATES: dict[str, float] = {
    "fp32_agreement": 0.999,
    "fp16_agreement": 0.995,
    "int8_agreement": 0.97,
    "int8_accuracy_drop": 1.0,
}
GATE_CLASSES = ("fp32", "fp16", "int8")
GATE_FIGURES = ("agreement", "accuracy_drop")


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _closest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.4)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_formats(names: Optional[Iterable[str] | str]) -> list[FormatSpec]:
    """Validate names (list or comma-separated string) in table order; an unknown name names the closest one."""
    if names is None:
        return list(FORMATS.values())
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [n.strip() for n in names if n and n.strip()]
    if not wanted:
        raise EdgekdError(f"no export formats given; formats are {', '.join(FORMATS)}")
    for n in wanted:
        if n not in FORMATS:
            raise EdgekdError(f"unknown export format {n!r}{_closest(n, FORMATS)} (formats: {', '.join(FORMATS)})")
    return [FORMATS[n] for n in FORMATS if n in wanted]


def valid_gate_keys() -> list[str]:
    keys = [f"{c}_{f}" for c in GATE_CLASSES for f in GATE_FIGURES]
    keys += [f"{n}_{f}" for n in FORMATS for f in GATE_FIGURES]
    return keys


def check_gate_keys(overrides: dict[str, float]) -> None:
    valid = valid_gate_keys()
    for k, v in (overrides or {}).items():
        if k not in valid:
            raise EdgekdError(
                f"unknown export gate {k!r}{_closest(k, valid)} (keys look like int8_agreement, "
                f"fp32_agreement, int8_accuracy_drop or <artifact>_agreement)"
            )
        if k.endswith("_agreement") and not 0.0 <= float(v) <= 1.0:
            raise EdgekdError(f"export gate {k}={v}: agreement is a fraction between 0 and 1 (e.g. 0.97)")


def gate_for(spec: FormatSpec, overrides: Optional[dict[str, float]] = None) -> dict:
    """{'min_agreement': float|None, 'max_accuracy_drop_points': float|None} for one artifact."""
    g = {**DEFAULT_GATES, **(overrides or {})}
    out = {}
    for fig, key in (("agreement", "min_agreement"), ("accuracy_drop", "max_accuracy_drop_points")):
        val = g.get(f"{spec.name}_{fig}", g.get(f"{spec.gate}_{fig}"))
        out[key] = None if val is None else float(val)
    return out
