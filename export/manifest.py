"""THE reader and writer of RUN_DIR/exports/manifest.json and of each artifact's model.json.

    exports/manifest.json        schema edgekd.exports/1: every artifact (format, precision, path, sha256,
                                 size, status, reason, parity), the source checkpoint, the preprocessing
    exports/<name>/model.json    schema edgekd.model/1: what an app needs to run the file (labels, input
                                 layout/size/dtype/normalisation, output kind); written by export/metadata.py

The export stage writes both; the benchmark and the Android installer read them through here, so a
missing or corrupt file gives the same one-line error everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import atomic_write_json

MANIFEST_SCHEMA = "edgekd.exports/1"
MODEL_SCHEMA = "edgekd.model/1"
MODEL_KEYS = ("sha256", "labels", "num_classes", "input", "output", "file")
INPUT_KEYS = ("layout", "height", "width", "channels", "dtype", "mean", "std")
ARTIFACT_SUFFIXES = (".onnx", ".tflite", ".mlpackage", ".mlmodel")


# -- exports/manifest.json ----------------------------------------------------------------------


def manifest_path(run_root) -> Path:
    return Path(run_root) / "exports" / "manifest.json"


def read_manifest(run_root) -> dict:
    """The exports manifest of a run, checked: a JSON object of this schema (older files carry none)
    whose "artifacts" is a list of objects. EdgekdError (one line) when missing or corrupt."""
    path = manifest_path(run_root)
    if not path.is_file():
        raise EdgekdError(f"no exports manifest at {path}: export the student first (edgekd export)")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        if manifest.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
            raise ValueError(f"schema is {manifest['schema']!r}, expected {MANIFEST_SCHEMA!r}")
        arts = manifest["artifacts"]
        if not isinstance(arts, list) or not all(isinstance(a, dict) for a in arts):
            raise ValueError("'artifacts' is not a list of objects")
    except (ValueError, KeyError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekdError(f"{path} is not a valid exports manifest: {msg}") from None
    return manifest


def write_manifest(run_root, manifest: dict) -> None:
    """Atomically (temp file + rename), so a reader sees the old or the new manifest, never half."""
    path = manifest_path(run_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)


def artifacts(
    manifest: dict, *, format: Optional[str] = None, precision: Optional[str] = None, status: Optional[str] = None
) -> list[dict]:
    """The manifest's artifact entries (manifest order) matching every given field."""
    want = {k: v for k, v in (("format", format), ("precision", precision), ("status", status)) if v is not None}
    return [a for a in manifest.get("artifacts", []) if all(a.get(k) == v for k, v in want.items())]


def parity_passed(entry: dict) -> tuple[bool, str]:
    """(passed, why not) for a manifest entry's parity record. Accepts {"status": "ok"|"pass"|"passed"}
    or {"passed": true} / {"ok": true}; anything else (failed, "needs macOS", unchecked) is not passed."""
    parity = entry.get("parity") if isinstance(entry, dict) else None
    if not isinstance(parity, dict) or not parity:
        return False, "parity was not checked"
    if "status" in parity:
        status = str(parity["status"]).lower()
        return status in ("ok", "pass", "passed"), f"parity status is {parity['status']!r}"
    for key in ("passed", "ok"):
        if key in parity:
            return bool(parity[key]), f"parity {key}={parity[key]!r}"
    return False, "parity has no status (unchecked)"


# -- exports/<name>/model.json ------------------------------------------------------------------


def read_model_json(path, suffix: Optional[str] = None) -> dict:
    """model.json, checked against MODEL_SCHEMA: keys present, layout NHWC/NCHW, the one resize the
    preprocessing contract implements, labels matching num_classes, `file` a plain file name beside it
    (with `suffix`, e.g. ".tflite", of that type). EdgekdError (one line) otherwise."""
    from edgekd.pipeline.preprocess import RESIZE_ALGORITHM  # (imports torch: only when a model.json is read)

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"model.json missing next to the model: {path}")
    try:
        meta: Any = json.loads(path.read_text())
    except ValueError as e:
        raise EdgekdError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise EdgekdError(f"{path}: not a JSON object")
    if meta.get("schema") != MODEL_SCHEMA:
        raise EdgekdError(f"{path}: schema is {meta.get('schema')!r}, expected {MODEL_SCHEMA!r}")
    for key in MODEL_KEYS:
        if key not in meta:
            raise EdgekdError(f"{path}: missing key {key!r}")
    inp = meta["input"]
    if not isinstance(inp, dict):
        raise EdgekdError(f"{path}: input is not an object")
    for key in INPUT_KEYS:
        if key not in inp:
            raise EdgekdError(f"{path}: missing key input.{key}")
    if inp["layout"] not in ("NHWC", "NCHW"):
        raise EdgekdError(f"{path}: input.layout {inp['layout']!r} is not NHWC or NCHW")
    if inp.get("resize", RESIZE_ALGORITHM) != RESIZE_ALGORITHM:
        raise EdgekdError(f"{path}: resize {inp['resize']!r} is not implemented by the app ({RESIZE_ALGORITHM})")
    suffixes = (suffix,) if suffix else ARTIFACT_SUFFIXES
    name = str(meta["file"])
    if not re.fullmatch(r"[\w.-]+", name) or Path(name).suffix not in suffixes:
        raise EdgekdError(f"{path}: file {meta['file']!r} is not a plain {'/'.join(suffixes)} file name")
    if not isinstance(meta["labels"], list) or len(meta["labels"]) != meta["num_classes"]:
        n = len(meta["labels"]) if isinstance(meta["labels"], list) else "no"
        raise EdgekdError(f"{path}: {n} labels but num_classes is {meta['num_classes']}")
    return meta


def write_model_json(path, meta: dict) -> None:
    """Atomically; `meta` from export.metadata.model_json with the file's sha256 filled in."""
    atomic_write_json(Path(path), meta)
