"""Artifact metadata: the sidecar model.json (schema edgekd.model/1, read by the Android app) and the same
facts inside each format's own metadata place.

- ONNX: `metadata_props` (key "edgekd.model" holds the JSON; labels/mean/std/layout also as their own keys).
- TFLite: a named metadata entry "edgekd.model" in the flatbuffer's `metadata` list pointing at a buffer
  holding the JSON (written with the flatbuffers object API of ai_edge_litert's schema; no tflite_support).
- CoreML: `user_defined_metadata` (same keys) and class labels through the classifier config.

The embedded copy carries everything in model.json except the file's own sha256 (a file cannot contain
its own hash).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from edgekd.export.manifest import MODEL_SCHEMA
from edgekd.pipeline import __version__ as EDGEKD_VERSION
from edgekd.pipeline.preprocess import RESIZE_ALGORITHM, SCALE

META_KEY = "edgekd.model"


def model_json(
    *,
    spec,
    arch: str,
    labels: list[str],
    height: int,
    width: int,
    mean,
    std,
    source_sha256: str,
    input_dtype: str = "float32",
    extra: Optional[dict] = None,
) -> dict:
    """model.json without the file hash (added once the file is final)."""
    meta: dict[str, Any] = {
        "schema": MODEL_SCHEMA,
        "name": "student",
        "arch": arch,
        "format": spec.format,
        "precision": spec.precision,
        "file": spec.filename,
        "sha256": None,
        "source_checkpoint_sha256": source_sha256,
        "edgekd_version": EDGEKD_VERSION,
        "labels": list(labels),
        "num_classes": len(labels),
        "input": {
            "layout": spec.layout,
            "height": int(height),
            "width": int(width),
            "channels": 3,
            "dtype": input_dtype,
            "color_mode": "RGB",
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "scale": SCALE,
            "resize": RESIZE_ALGORITHM,
        },
        "output": {"kind": "logits", "num_classes": len(labels)},
        "artifact": spec.name,
    }
    if extra:
        meta.update(extra)
    return meta


def embedded(meta: dict) -> dict:
    """What goes inside the model file: model.json minus its own hash."""
    return {k: v for k, v in meta.items() if k != "sha256"}


def flat_props(meta: dict) -> dict[str, str]:
    """String key/values for formats with a flat string map (ONNX metadata_props, CoreML user metadata)."""
    e = embedded(meta)
    i = e["input"]
    return {
        META_KEY: json.dumps(e, sort_keys=True),
        "edgekd.labels": json.dumps(e["labels"]),
        "edgekd.input_size": f"{i['height']}x{i['width']}",
        "edgekd.layout": i["layout"],
        "edgekd.mean": json.dumps(i["mean"]),
        "edgekd.std": json.dumps(i["std"]),
        "edgekd.color_mode": i["color_mode"],
        "edgekd.version": str(e["edgekd_version"]),
        "edgekd.source_checkpoint_sha256": str(e["source_checkpoint_sha256"]),
    }


# -- ONNX ---------------------------------------------------------------------------------------


def embed_onnx(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    props = flat_props(meta)
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = f"edgekd student {meta['arch']} ({meta['precision']}), labels: {', '.join(meta['labels'])}"
    model.producer_name = "edgekd"
    model.producer_version = str(meta["edgekd_version"])
    onnx.save(model, str(path))


def read_onnx(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ValueError(f"{path} has no {META_KEY} metadata")
    return json.loads(props[META_KEY])


# -- TFLite -------------------------------------------------------------------------------------


def embed_tflite_bytes(content: bytes, meta: dict) -> bytes:
    """Add (or replace) the "edgekd.model" metadata entry of a .tflite flatbuffer."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    for b in model.buffers or []:
        # Buffers stored after the flatbuffer (offset/size: ai-edge-quantizer, litert-torch) would be lost by
        # the repack below: inline them.
        if (b.offset or 0) > 1 and b.size:
            b.data = np.frombuffer(content[b.offset : b.offset + b.size], dtype=np.uint8)
            b.offset, b.size = 0, 0
    blob = json.dumps(embedded(meta), sort_keys=True).encode()
    entries = [m for m in (model.metadata or []) if _name(m.name) != META_KEY]
    buf = fb.BufferT()
    buf.data = np.frombuffer(blob, dtype=np.uint8)
    model.buffers.append(buf)
    md = fb.MetadataT()
    md.name = META_KEY
    md.buffer = len(model.buffers) - 1
    model.metadata = entries + [md]
    builder = flatbuffers.Builder(len(content) + len(blob) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(n: Any) -> str:
    return n.decode() if isinstance(n, (bytes, bytearray)) else str(n)


def embed_tflite(path: Path, meta: dict) -> None:
    path.write_bytes(embed_tflite_bytes(path.read_bytes(), meta))


def read_tflite_bytes(content: bytes) -> dict:
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if _name(m.Name()) == META_KEY:
            return json.loads(bytes(model.Buffers(m.Buffer()).DataAsNumpy()).decode())
    raise ValueError(f"no {META_KEY} metadata in the flatbuffer")


def read_tflite(path: Path) -> dict:
    return read_tflite_bytes(Path(path).read_bytes())


# -- CoreML -------------------------------------------------------------------------------------


def embed_coreml(mlmodel: Any, meta: dict) -> None:
    """Set metadata on an in-memory coremltools MLModel (saved afterwards by the caller)."""
    for k, v in flat_props(meta).items():
        mlmodel.user_defined_metadata[k] = v
    mlmodel.short_description = (
        f"edgekd student {meta['arch']} ({meta['precision']}); input "
        f"{meta['input']['layout']} RGB, (x/255-mean)/std; output logits"
    )
    mlmodel.author = "edgekd"
    mlmodel.version = str(meta["edgekd_version"])
    mlmodel.license = ""


def read_coreml(path: Path) -> dict:
    from coremltools.models.utils import load_spec

    spec = load_spec(str(path))
    ud = dict(spec.description.metadata.userDefined)
    if META_KEY not in ud:
        raise ValueError(f"{path} has no {META_KEY} metadata")
    return json.loads(ud[META_KEY])


def read_embedded(path: Path) -> dict:
    """The metadata inside an artifact, by suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        return read_onnx(path)
    if path.suffix == ".tflite":
        return read_tflite(path)
    if path.suffix in (".mlpackage", ".mlmodel"):
        return read_coreml(path)
    raise ValueError(f"unknown artifact type: {path}")
