"""CoreML: coremltools mlprogram from the traced student (fp16 compute) and its int8-weight variant.

Prediction needs macOS; on Linux the export checks the spec instead (export/parity.py: validate_coreml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from edgekd.export import metadata as md
from edgekd.export.context import ExportContext, quiet_stdout
from edgekd.pipeline.errors import EdgekdError


def coreml_base(ctx: ExportContext):
    """mlprogram, fp16 compute, float32 NCHW input, classifier with the class labels (cached)."""
    if "coreml_fp16" in ctx.cache:
        return ctx.cache["coreml_fp16"]
    with quiet_stdout():
        import coremltools as ct

        x = torch.from_numpy(ctx.calib[:1].copy())
        traced = torch.jit.trace(ctx.model, x)
        ml = ct.convert(
            traced,
            source="pytorch",
            convert_to="mlprogram",
            inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name="logits", dtype=np.float32)],
            classifier_config=ct.ClassifierConfig(list(ctx.labels), predicted_feature_name="classLabel"),
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS16,
            skip_model_load=sys.platform != "darwin",
        )
    ctx.cache["coreml_fp16"] = ml
    return ml


def save_coreml(ml, out: Path, meta: dict) -> None:
    md.embed_coreml(ml, meta)
    with quiet_stdout():
        ml.save(str(out))


def coreml_fp16(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import coremltools as ct

    save_coreml(coreml_base(ctx), out, meta)
    return {"converter": f"coremltools {ct.__version__} (torch.jit.trace -> mlprogram, FLOAT16, iOS16)"}


def coreml_int8(ctx: ExportContext, spec, out: Path, meta: dict) -> dict:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    mode = str(ctx.options["coreml_int8_mode"])
    base = coreml_base(ctx)
    with quiet_stdout():
        if mode == "linear":
            conf = cto.OptimizationConfig(
                global_config=cto.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=512
                )
            )
            ml = cto.linear_quantize_weights(base, conf)
            how = "linear symmetric int8 per-channel weights"
        elif mode == "palettize":
            conf = cto.OptimizationConfig(
                global_config=cto.OpPalettizerConfig(nbits=8, mode="kmeans", weight_threshold=512)
            )
            ml = cto.palettize_weights(base, conf)
            how = "8-bit k-means palettized weights"
        else:
            raise EdgekdError(f"unknown coreml_int8_mode {mode!r}; use 'linear' or 'palettize'")
    save_coreml(ml, out, meta)
    return {"converter": f"coremltools {ct.__version__} optimize ({how})", "quantization": {"weights": how}}
