"""Compare an artifact with the PyTorch student, gate the figures, and check what is inside the file.

The artifact is run by export/runtimes.py (`load_runner(path)(x)` -> float32 logits [N, K]);
`parity_metrics` compares those logits with the student's and `apply_gate` holds them to the format's
gate. `inspect_artifact(path)` reports what is really inside (tensor dtypes, op counts) so that a file is
only labelled int8 when its weights and activations are 8-bit integers (`check_precision`); off macOS a
CoreML file is checked by its spec (`validate_coreml`) instead of by prediction.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.export.runtimes import coreml_labels, tflite_interpreter, tflite_ops
from edgekd.pipeline.errors import EdgekdError

# ----------------------------------------------------------------------------------------------
# metrics and gates


def parity_metrics(ref: np.ndarray, got: np.ndarray, labels: Optional[np.ndarray] = None) -> dict:
    """Artifact logits `got` vs PyTorch logits `ref` on the same preprocessed images."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise EdgekdError(f"artifact output shape {got.shape} differs from the student's {ref.shape}")
    diff = np.abs(ref - got)
    num = (ref * got).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    out = {
        "images": int(len(ref)),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        # relative to the largest |logit| of the student on these images (logit scales differ per model)
        "max_abs_rel": float(diff.max() / max(np.abs(ref).max(), 1e-12)) if diff.size else 0.0,
        "cosine": float(cos.min()) if len(cos) else 1.0,
        "cosine_mean": float(cos.mean()) if len(cos) else 1.0,
        "agreement": float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0,
        "finite": bool(np.isfinite(got).all()),
    }
    if labels is not None and len(labels) == len(ref):
        acc_ref = float((ref.argmax(1) == labels).mean())
        acc = float((got.argmax(1) == labels).mean())
        out.update(accuracy=acc, student_accuracy=acc_ref, accuracy_drop_points=round((acc_ref - acc) * 100, 4))
        # per class (index = class id, the manifest's `labels` order): the per-class recall gate's figures
        k = ref.shape[1]
        out["class_support"] = np.bincount(labels, minlength=k)[:k].astype(int).tolist()
        out["per_class_recall"] = class_recall(got.argmax(1), labels, k)
        out["student_per_class_recall"] = class_recall(ref.argmax(1), labels, k)
    else:
        out.update(accuracy=None, student_accuracy=None, accuracy_drop_points=None)
    return out


def class_recall_gate(max_drop_points: Optional[float], labels: list[str]) -> dict:
    """The per-class recall part of an artifact's gate (merged into export.formats.gate_for's dict)."""
    if max_drop_points is None:
        return {}
    return {"max_class_recall_drop_points": float(max_drop_points), "class_labels": list(labels)}


def class_recall(pred: np.ndarray, labels: np.ndarray, k: int) -> list[Optional[float]]:
    """Recall of each class 0..k-1 (None for a class without images)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    out: list[Optional[float]] = []
    for c in range(k):
        m = labels == c
        out.append(float((pred[m] == c).mean()) if m.any() else None)
    return out


def class_recall_drops(metrics: dict) -> list[dict]:
    """Per class with images: recall of the student and of the artifact, the drop in points and in images,
    worst first. Empty when the parity record has no per-class figures."""
    rs, ra, n = (metrics.get(k) for k in ("student_per_class_recall", "per_class_recall", "class_support"))
    if not (rs and ra and n):
        return []
    rows = []
    for c, (s, a, support) in enumerate(zip(rs, ra, n)):
        if s is None or a is None or not support:
            continue
        rows.append(
            {
                "class_index": c,
                "student_recall": s,
                "artifact_recall": a,
                "drop_points": round((s - a) * 100, 4),
                "images_lost": int(round((s - a) * support)),
                "support": int(support),
            }
        )
    return sorted(rows, key=lambda r: (-r["drop_points"], r["class_index"]))


def class_recall_failures(metrics: dict, limit_points: float, labels: Optional[list] = None) -> list[str]:
    """Why the artifact misses the per-class recall gate: a class whose recall fell by more than
    `limit_points` points AND by more than one image of that class (one flipped image is noise on a small
    class, not an erased one). Names the class (from `labels` when given)."""
    why = []
    for r in class_recall_drops(metrics):
        if r["drop_points"] > limit_points and r["images_lost"] > 1:
            c = r["class_index"]
            name = labels[c] if labels and c < len(labels) else f"class {c}"
            why.append(
                f"class {name!r} recall {r['student_recall'] * 100:.1f}% -> {r['artifact_recall'] * 100:.1f}% "
                f"({r['images_lost']} of {r['support']} images lost, -{r['drop_points']:.1f} points > {limit_points:g})"
            )
    return why


def apply_gate(metrics: dict, gate: dict) -> tuple[str, list[str]]:
    """('passed'|'failed', reasons) for metrics against {'min_agreement', 'max_accuracy_drop_points',
    'max_class_recall_drop_points' (with 'class_labels' to name the class)}."""
    why = []
    if not metrics.get("finite", True):
        why.append("non-finite logits")
    ma = gate.get("min_agreement")
    if ma is not None and metrics["agreement"] < ma:
        why.append(f"top-1 agreement {metrics['agreement'] * 100:.2f}% < {ma * 100:.2f}%")
    md = gate.get("max_accuracy_drop_points")
    drop = metrics.get("accuracy_drop_points")
    if md is not None and drop is not None and drop > md:
        why.append(f"accuracy drop {drop:.2f} points > {md:g}")
    mc = gate.get("max_class_recall_drop_points")  # gate.max_class_recall_drop (pipeline/config.py GateConfig)
    if mc is not None:
        why += class_recall_failures(metrics, float(mc), gate.get("class_labels"))
    return ("failed" if why else "passed"), why


# ----------------------------------------------------------------------------------------------
# what is inside a file


def _tflite_inspect(path: Path) -> dict:
    it = tflite_interpreter(path, 1, delegates=False)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = tflite_ops(it)
    compute = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    w_total = w_int8 = 0
    act_int8 = act_float = 0
    float_ops = []
    for o in ops:
        if o["op_name"] not in compute:
            continue
        ins = [tensors[i] for i in o["inputs"] if i >= 0]
        data, weight = ins[0], ins[1]
        n = int(np.prod(weight["shape"]))
        w_total += n
        if np.dtype(weight["dtype"]) == np.int8:
            w_int8 += n
        if np.dtype(data["dtype"]) in (np.int8, np.uint8):
            act_int8 += 1
        else:
            act_float += 1
            float_ops.append(o["op_name"])
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    return {
        "ops": dict(Counter(o["op_name"] for o in ops)),
        "transposes": sum(1 for o in ops if o["op_name"] == "TRANSPOSE"),
        "input": {"shape": [int(s) for s in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name},
        "output": {"shape": [int(s) for s in out["shape"]], "dtype": np.dtype(out["dtype"]).name},
        "weights_int8_fraction": round(w_int8 / w_total, 4) if w_total else 0.0,
        "compute_ops_int8_activations": act_int8,
        "compute_ops_float_activations": act_float,
        "float_compute_ops": dict(Counter(float_ops)),
    }


def _onnx_inspect(path: Path) -> dict:
    import onnx
    from onnx import TensorProto

    m = onnx.load(str(path))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    w_total = w_int8 = 0
    act_q = act_f = 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul", "QLinearConv", "ConvInteger"):
            continue
        wname = n.input[1]
        src = producers.get(wname)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
            t = inits[src.input[0]]
            size = int(np.prod(t.dims))
            w_total += size
            if t.data_type in (TensorProto.INT8, TensorProto.UINT8):
                w_int8 += size
        elif wname in inits:
            w_total += int(np.prod(inits[wname].dims))
        d = producers.get(n.input[0])
        if d is not None and d.op_type == "DequantizeLinear":
            act_q += 1
        else:
            act_f += 1
    inp = g.input[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.shape.dim]
    return {
        "ops": dict(Counter(n.op_type for n in g.node)),
        "input": {"shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(inp.elem_type).name},
        "weights_int8_fraction": round(w_int8 / w_total, 4) if w_total else 0.0,
        "compute_ops_int8_activations": act_q,
        "compute_ops_float_activations": act_f,
        "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
    }


def _coreml_inspect(path: Path) -> dict:
    from coremltools.models.utils import load_spec

    spec = load_spec(str(path))
    desc = spec.description
    inputs = []
    for i in desc.input:
        ma = i.type.multiArrayType
        inputs.append(
            {
                "name": i.name,
                "shape": [int(s) for s in ma.shape],
                "dtype": {65568: "float32", 65552: "float16", 131104: "int32"}.get(ma.dataType, str(ma.dataType)),
            }
        )
    outputs = [{"name": o.name, "type": o.type.WhichOneof("Type")} for o in desc.output]
    # weights: const ops of the MIL program (fp16 tensors) and constexpr_* ops (quantized/palettized weights)
    op_types: Counter = Counter()
    const_dtypes: Counter = Counter()
    if spec.WhichOneof("Type") == "mlProgram":
        from coremltools.proto import MIL_pb2

        dt_name = {v: k for k, v in MIL_pb2.DataType.items()}
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    op_types[op.type] += 1
                    if op.type == "const" or op.type.startswith("constexpr_"):
                        for o in op.outputs:
                            tt = o.type.tensorType
                            if o.type.WhichOneof("type") == "tensorType" and len(tt.dimensions) >= 2:
                                const_dtypes[dt_name.get(tt.dataType, str(tt.dataType))] += 1
                        for attr in op.attributes.values():
                            if (
                                attr.type.WhichOneof("type") == "tensorType"
                                and len(attr.type.tensorType.dimensions) >= 2
                            ):
                                const_dtypes["attr:" + dt_name.get(attr.type.tensorType.dataType, "?")] += 1
    return {
        "spec_type": spec.WhichOneof("Type"),
        "spec_version": int(spec.specificationVersion),
        "inputs": inputs,
        "outputs": outputs,
        "class_labels": coreml_labels(spec),
        "predicted_feature": desc.predictedFeatureName,
        "predicted_probabilities": desc.predictedProbabilitiesName,
        "user_metadata_keys": sorted(desc.metadata.userDefined.keys()),
        "ops": dict(op_types),
        "quantized_weight_ops": sum(v for k, v in op_types.items() if k.startswith("constexpr_")),
        "weight_dtypes": dict(const_dtypes),
    }


def inspect_artifact(path: str | Path) -> dict:
    p = Path(path)
    if p.suffix == ".tflite":
        return _tflite_inspect(p)
    if p.suffix == ".onnx":
        return _onnx_inspect(p)
    if p.suffix in (".mlpackage", ".mlmodel"):
        return _coreml_inspect(p)
    raise EdgekdError(f"cannot inspect {p}")


def check_precision(spec, info: dict, allowed_float_ops: int = 0) -> Optional[str]:
    """None if the file is what its label says; otherwise why it must not carry that label."""
    if spec.precision in ("int8", "dynamic-int8"):
        if spec.format == "coreml":
            if info.get("quantized_weight_ops", 0) == 0:
                return "no quantized (constexpr_*) weight ops in the CoreML program: weights are not int8"
            return None
        wf = info.get("weights_int8_fraction", 0.0)
        if wf < 0.9:
            return f"only {wf * 100:.0f}% of conv/fc weight values are int8"
        if spec.precision == "int8":
            f_ops = info.get("compute_ops_float_activations", 0)
            q_ops = info.get("compute_ops_int8_activations", 0)
            if q_ops == 0 or f_ops > allowed_float_ops:
                return (
                    f"{f_ops} conv/fc op(s) run on float activations ({q_ops} on 8-bit), more than the "
                    f"{allowed_float_ops} deliberately kept float"
                )
    elif spec.format == "tflite" and spec.precision in ("fp32", "fp16"):
        if info.get("compute_ops_int8_activations", 0):
            return "float artifact contains int8 compute ops"
    if spec.format == "tflite" and info.get("transposes", 0) > 2:
        return f"{info['transposes']} TRANSPOSE ops (layout conversion storm)"
    return None


def validate_coreml(info: dict, meta: dict) -> list[str]:
    """Spec checks standing in for prediction off macOS: inputs, outputs, labels, metadata, weight dtypes."""
    problems = []
    i = meta["input"]
    want = [1, 3, i["height"], i["width"]]
    if not info["inputs"] or info["inputs"][0]["shape"] != want:
        problems.append(f"input shape {info['inputs'][0]['shape'] if info['inputs'] else None} != {want}")
    elif info["inputs"][0]["dtype"] != "float32":
        problems.append(f"input dtype {info['inputs'][0]['dtype']} != float32")
    if info["class_labels"] != list(meta["labels"]):
        problems.append(f"class labels {info['class_labels']} != {meta['labels']}")
    if not info["predicted_probabilities"] or not any(
        o["name"] == info["predicted_probabilities"] for o in info["outputs"]
    ):
        problems.append("no per-class score output")
    if "edgekd.model" not in info["user_metadata_keys"]:
        problems.append("edgekd.model user metadata missing")
    if info["spec_type"] != "mlProgram":
        problems.append(f"spec type {info['spec_type']} is not mlProgram")
    wd = info.get("weight_dtypes", {})
    if meta["precision"] == "fp16" and not any("FLOAT16" in k for k in wd):
        problems.append(f"no fp16 weights found ({wd})")
    if meta["precision"] == "int8" and not any("INT8" in k or "UINT8" in k for k in wd):
        problems.append(f"no 8-bit weights found ({wd})")
    return problems
