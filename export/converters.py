"""The converter registry: the `converter` names of the format table (export/formats.py) -> functions.

Each converter is `fn(ctx, spec, out: Path, meta: dict) -> dict`: it writes the model file (or .mlpackage
folder) at `out` (a temporary path the caller publishes atomically), embeds `meta` in the format's
metadata place, and returns facts for the manifest. They live one format per module (export/to_onnx.py,
export/to_tflite.py, export/to_coreml.py) and share export/context.py's ExportContext, in which the
intermediate products (the fp32 ONNX graph, the onnx2tf SavedModels, the CoreML fp16 model) are built once
per export run.

To add a format: write its converter in the format's module, register it here, add its row to FORMATS.
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.export import to_coreml, to_onnx, to_tflite

CONVERTERS: dict[str, Callable[..., dict]] = {
    "onnx_fp32": to_onnx.onnx_fp32,
    "onnx_int8": to_onnx.onnx_int8,
    "tflite_fp32": to_tflite.tflite_fp32,
    "tflite_fp16": to_tflite.tflite_fp16,
    "tflite_int8": to_tflite.tflite_int8,
    "tflite_dynamic": to_tflite.tflite_dynamic,
    "coreml_fp16": to_coreml.coreml_fp16,
    "coreml_int8": to_coreml.coreml_int8,
}
