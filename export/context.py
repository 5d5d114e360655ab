"""What the converters share: the export context (the student, its calibration data, the options and a
cache of intermediate products) and small helpers (quiet converters, captured output, agreement figures,
calibration images).

The per-format converters live in export/to_onnx.py, export/to_tflite.py and export/to_coreml.py; the
registry that the format table's `converter` names resolve through is export/converters.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from edgekd.export.qat import batched_logits
from edgekd.pipeline.config import ExportConfig
from edgekd.pipeline.errors import EdgekdError

# The converters' knobs: ExportConfig fields (meanings and defaults live there, in pipeline/config.py).
OPTION_KEYS = (
    "int8_target_agreement",
    "int8_max_float_layers",
    "int8_mse_fraction",
    "int8_scan_images",
    "int8_min_gain",
    "int8_qat",
    "int8_qat_epochs",
    "int8_qat_images",
    "int8_qat_lr",
    "onnx_int8_activations",
    "onnx_int8_reduce_range",
    "onnx_int8_calibration",
    "onnx_exporter",
    "coreml_int8_mode",
    "parity_threads",
    "tflite_converters",
    "candidate_timing_rounds",
    "candidate_timing_runs",
)
OPTION_DEFAULTS: dict[str, Any] = {
    k: ExportConfig.model_fields[k].get_default(call_default_factory=True) for k in OPTION_KEYS
}


def export_options(cfg) -> dict:
    return {k: getattr(cfg.export, k) for k in OPTION_KEYS}


class ExportContext:
    """Everything the converters share: the student, its data, and `cache`, where the converters keep the
    intermediate products they build once per export run (the fp32 ONNX graph, the onnx2tf SavedModels, the
    CoreML fp16 model, the int8 plan) under `work`."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        arch: str,
        labels: list[str],
        image_size: int,
        mean,
        std,
        calib: np.ndarray,
        work: Path,
        threads: int,
        source_sha256: str,
        options: Optional[dict] = None,
        train_images: Optional[Callable[[int], np.ndarray]] = None,
    ):
        self.model = model.eval()
        self.train_images = train_images  # n -> up to n normalised NCHW training images (QAT); None: calib only
        self.arch = arch
        self.labels = labels
        self.size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.calib = np.ascontiguousarray(calib, dtype=np.float32)  # normalised NCHW training images
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.threads = int(threads)
        self.source_sha256 = source_sha256
        self.options = {**OPTION_DEFAULTS, **(options or {})}
        self.cache: dict[str, Any] = {}
        # Set by the export stage per artifact (export/api.py export_one): candidate file bytes -> parity record
        # (export/parity.py figures + gate status on the test images). None: calibration agreement only.
        self.parity_check: Optional[Callable[[bytes], dict]] = None
        # Candidate latencies (export/candidates.py interleaved_latency); tests inject a deterministic one.
        self.timer: Optional[Callable[..., dict]] = None

    @classmethod
    def of_config(cls, cfg, *, model: torch.nn.Module, labels: list[str], **kw) -> ExportContext:
        """The context of a run's student: arch, input size and normalisation from its config (export stage and
        the converter comparison build it the same way)."""
        return cls(
            model=model,
            arch=cfg.student.arch,
            labels=labels,
            image_size=cfg.data.image_size,
            mean=cfg.data.mean,
            std=cfg.data.std,
            **kw,
        )

    # -- reference ---------------------------------------------------------------------------

    def torch_logits(self, x: np.ndarray, model: Optional[torch.nn.Module] = None) -> np.ndarray:
        if not len(x):
            return np.zeros((0, len(self.labels)), np.float32)
        return batched_logits(model or self.model, x)

    @property
    def calib_logits(self) -> np.ndarray:
        if "calib_logits" not in self.cache:
            self.cache["calib_logits"] = self.torch_logits(self.calib)
        return self.cache["calib_logits"]

    @property
    def calib_nhwc(self) -> np.ndarray:
        return np.ascontiguousarray(self.calib.transpose(0, 2, 3, 1))

    @property
    def calib_nhwc_01(self) -> np.ndarray:
        """Calibration images back in 0..1 (what onnx2tf's own sample data looks like)."""
        m = np.array(self.mean, np.float32).reshape(1, 1, 1, 3)
        s = np.array(self.std, np.float32).reshape(1, 1, 1, 3)
        return np.clip(self.calib_nhwc * s + m, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# figures


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two logit arrays."""
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0


def logit_mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def calibration_images(data, cfg, n: int) -> np.ndarray:
    """Up to n training images, classes taken in turn (deterministic), through the preprocessing contract (decoded
    from their files: n is export.calibration_images or int8_qat_images, not the split)."""
    from edgekd.pipeline.imagestore import file_images

    by: dict[int, list] = {}
    for it in sorted(data.subset("train"), key=lambda i: i.key):
        by.setdefault(it.label, []).append(it)
    queues = [by[k] for k in sorted(by)]
    picked = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    if not picked:
        raise EdgekdError("no training images for int8 calibration (the train split is empty)")
    return file_images(picked, cfg.data.image_size, cfg.data.mean, cfg.data.std).array(desc="load calibration")


# ----------------------------------------------------------------------------------------------
# quiet converters


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), at most `limit` characters."""
    s = str(e).strip()
    return s.splitlines()[0][:limit] if s else type(e).__name__


@contextlib.contextmanager
def quiet_stdout():
    """Converters print progress to stdout; keep the CLI's stdout clean (errors still raise)."""
    if os.environ.get("EDGEKD_VERBOSE_CONVERTERS"):
        yield
        return
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def tf_quiet() -> None:
    """TensorFlow's C++ logging off and no GPU probing; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))


class Captured:
    """What captured_output caught (`text`, set when the block ends)."""

    text = ""

    def tail(self, n: int = 12) -> list[str]:
        lines = [ln.rstrip() for ln in self.text.splitlines() if ln.strip()]
        return lines[-n:]


@contextlib.contextmanager
def captured_output():
    """Converters (TF/MLIR C++ logging, onnx2tf, coremltools progress bars) write to fd 1 and 2 directly:
    capture both at the file-descriptor level; our own "[edgekd]" lines are replayed afterwards and the
    tail is kept for the manifest when a conversion fails. EDGEKD_VERBOSE_CONVERTERS=1 shows everything."""
    cap = Captured()
    if os.environ.get("EDGEKD_VERBOSE_CONVERTERS"):
        yield cap
        return
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    tmp = tempfile.TemporaryFile()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(tmp.fileno(), 1)
    os.dup2(tmp.fileno(), 2)
    try:
        yield cap
    finally:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        tmp.seek(0)
        cap.text = tmp.read().decode("utf-8", errors="replace")
        tmp.close()
        for line in cap.text.splitlines():
            if line.startswith("[edgekd]"):
                print(line, file=sys.stderr, flush=True)
