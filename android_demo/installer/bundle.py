"""The bundle the app loads: which exported artifact, whether its three files agree, copying them in.

model.tflite + model.json + labels.txt travel together; the app refuses a model whose sha256 differs
from model.json's, so each file is checked before and after it is copied.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.export.formats import FORMATS
from edgekd.export.manifest import artifacts, manifest_path, parity_passed, read_manifest, read_model_json
from edgekd.export.runtimes import TfliteRunner
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import sha256_file

# The app runs LiteRT: it takes the formats of the table that LiteRT runs (tflite), files of their suffix.
APP_RUNTIME = "litert"
APP_FORMATS = tuple(sorted({s.format for s in FORMATS.values() if s.runtime == APP_RUNTIME}))
(APP_SUFFIX,) = {s.suffix for s in FORMATS.values() if s.runtime == APP_RUNTIME}


def atomic_copy(src: Path, dst: Path, sha256: str) -> None:
    """Copy through a temp file beside dst, hash what was written, rename only if it matches."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise EdgekdError(
                f"sha256 mismatch while copying {src} to {dst}: expected {sha256[:12]}, wrote {h.hexdigest()[:12]}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary project files
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def select_artifact(run_dir: Path, precision: str) -> dict:
    """The manifest entry of the app-runnable (tflite) artifact with this precision, or a one-line error.

    It must have status "ok" and a passed parity check: a model that disagrees with the student is not shipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekdError(f"run directory not found: {run_dir}")
    manifest = read_manifest(run_dir)
    path = manifest_path(run_dir)
    fmt = "/".join(APP_FORMATS)
    candidates = [a for f in APP_FORMATS for a in artifacts(manifest, format=f)]
    matches = [a for a in candidates if a.get("precision") == precision]
    if not matches:
        have = ", ".join(f"{a.get('name')} ({a.get('precision')}, {a.get('status')})" for a in candidates) or "none"
        raise EdgekdError(f"no {fmt} artifact with precision {precision} in {path}; {fmt} artifacts: {have}")
    ok = [a for a in matches if a.get("status") == "ok"]
    art = (ok or matches)[0]
    if art.get("status") != "ok":
        reason = f": {art['reason']}" if art.get("reason") else ""
        raise EdgekdError(f"artifact {art.get('name')} has status {art.get('status')}{reason}; nothing to install")
    passed, why = parity_passed(art)
    if not passed:
        raise EdgekdError(f"artifact {art.get('name')} did not pass parity ({why}); refusing to ship it")
    return art


def expected_input_shape(meta: dict) -> list[int]:
    i = meta["input"]
    if i["layout"] == "NCHW":
        return [1, i["channels"], i["height"], i["width"]]
    return [1, i["height"], i["width"], i["channels"]]


def read_labels(path: Path) -> list[str]:
    """labels.txt as the app reads it: one label a line, blank lines ignored."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def check_bundle(model_path: Path, expected_sha: Optional[str] = None) -> dict:
    """Checks model.tflite + model.json + labels.txt in one folder; returns model.json.

    Hash (manifest and model.json), labels, and the model's tensors (as LiteRT loads it) against model.json."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EdgekdError(f"model file not found: {model_path}")
    actual = sha256_file(model_path)
    if expected_sha and actual != expected_sha:
        raise EdgekdError(
            f"sha256 mismatch for {model_path}: manifest says {expected_sha[:12]}, file has {actual[:12]}"
        )
    meta = read_model_json(model_path.parent / "model.json", suffix=APP_SUFFIX)
    if meta["sha256"] != actual:
        raise EdgekdError(
            f"sha256 mismatch for {model_path}: model.json says {meta['sha256'][:12]}, file has {actual[:12]}"
        )
    labels_path = model_path.parent / "labels.txt"
    if not labels_path.is_file():
        raise EdgekdError(f"labels.txt missing next to the model: {labels_path}")
    labels = read_labels(labels_path)
    if labels != list(meta["labels"]):
        raise EdgekdError(
            f"{labels_path} does not match model.json labels ({len(labels)} vs {len(meta['labels'])} lines)"
        )
    runner = TfliteRunner(model_path, threads=1, layout=meta["input"]["layout"])
    inp, out = runner.input_details, runner.output_details
    if list(inp["shape"]) != expected_input_shape(meta):
        raise EdgekdError(
            f"{model_path}: input shape {list(inp['shape'])} does not match model.json "
            f"{meta['input']['layout']} {expected_input_shape(meta)}"
        )
    if np.dtype(inp["dtype"]).name != meta["input"]["dtype"]:
        raise EdgekdError(
            f"{model_path}: input dtype {np.dtype(inp['dtype']).name} but model.json says {meta['input']['dtype']}"
        )
    if int(np.prod(out["shape"])) != meta["num_classes"]:
        raise EdgekdError(
            f"{model_path}: {int(np.prod(out['shape']))} outputs but model.json has {meta['num_classes']} labels"
        )
    return meta
