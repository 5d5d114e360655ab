"""Fixtures for the Android tests: a fake exported run with tiny TFLite classifiers, app copies."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import full_int8_tflite

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "android_demo"
LABELS = ["defect_0", "defect_1_3", "defect_2_3", "defect_1"]
# input size per artifact: small for speed, and the realistic sizes where float rounding of the
# resize weights shows up (a non-FMA index computation is off by 6e-5 at 300 -> 224 px)
SIZES = {"tflite": 32, "tflite-fp16": 224, "tflite-int8": 128}
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_models() -> dict[str, bytes]:
    """fp32 NHWC, fp16 NCHW and full-int8 NHWC (int8 in/out) versions of one tiny conv classifier."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    conv_w = tf.constant(rng.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32))
    conv_b = tf.constant(rng.normal(0, 0.1, (8,)).astype(np.float32))
    fc_w = tf.constant(rng.normal(0, 0.8, (8, 4)).astype(np.float32))
    fc_b = tf.constant(np.array([0.1, -0.2, 0.05, 0.0], np.float32))

    def body(x_nhwc):
        y = tf.nn.relu(tf.nn.conv2d(x_nhwc, conv_w, strides=2, padding="SAME") + conv_b)
        return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), fc_w) + fc_b

    def nhwc(size):
        return tf.function(body, input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])

    def nchw(size):
        return tf.function(
            lambda x: body(tf.transpose(x, [0, 2, 3, 1])),
            input_signature=[tf.TensorSpec([1, 3, size, size], tf.float32)],
        )

    def converter(fn):
        return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)

    out = {"tflite": converter(nhwc(SIZES["tflite"])).convert()}

    c = converter(nchw(SIZES["tflite-fp16"]))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]
    out["tflite-fp16"] = c.convert()

    def representative():
        r = np.random.default_rng(1)
        size = SIZES["tflite-int8"]
        for _ in range(16):
            yield [r.uniform(-2.1, 2.6, (1, size, size, 3)).astype(np.float32)]

    out["tflite-int8"] = full_int8_tflite(nhwc(SIZES["tflite-int8"]), representative)
    return out


def _write_test_split(run: Path) -> None:
    """data/split.json with two real image files in the test split (300 px grey PNG like ELPV, small RGB PNG)."""
    from PIL import Image

    img_dir = run / "images"
    img_dir.mkdir()
    r = np.random.default_rng(7)
    grey = img_dir / "cell_a.png"
    Image.fromarray(r.integers(0, 256, (300, 300), dtype=np.uint8), mode="L").save(grey)
    rgb = img_dir / "cell_b.png"
    Image.fromarray(r.integers(0, 256, (20, 27, 3), dtype=np.uint8), mode="RGB").save(rgb)
    items = [
        {"key": "cell_a.png", "path": str(grey), "label": 0, "split": "test", "sha256": _sha(grey)},
        {"key": "cell_b.png", "path": str(rgb), "label": 3, "split": "test", "sha256": _sha(rgb)},
        {"key": "missing.png", "path": str(img_dir / "missing.png"), "label": 1, "split": "train", "sha256": ""},
    ]
    (run / "data").mkdir()
    (run / "data" / "split.json").write_text(json.dumps({"source": "test", "classes": LABELS, "items": items}))


def make_run(root: Path) -> Path:
    """RUN_DIR with exports/{tflite,tflite-fp16,tflite-int8}/ and exports/manifest.json per the contract."""
    run = root / "run"
    exports = run / "exports"
    exports.mkdir(parents=True)
    precision = {"tflite": "fp32", "tflite-fp16": "fp16", "tflite-int8": "int8"}
    layout = {"tflite": "NHWC", "tflite-fp16": "NCHW", "tflite-int8": "NHWC"}
    artifacts = []
    for name, blob in _tiny_models().items():
        d = exports / name
        d.mkdir()
        (d / "model.tflite").write_bytes(blob)
        sha = _sha(d / "model.tflite")
        meta = {
            "schema": "edgekd.model/1",
            "name": "student",
            "arch": "tiny_test_cnn",
            "format": "tflite",
            "precision": precision[name],
            "file": "model.tflite",
            "sha256": sha,
            "source_checkpoint_sha256": "0" * 64,
            "edgekd_version": "0.1.0",
            "labels": LABELS,
            "num_classes": len(LABELS),
            "input": {
                "layout": layout[name],
                "height": SIZES[name],
                "width": SIZES[name],
                "channels": 3,
                "dtype": "int8" if name == "tflite-int8" else "float32",
                "color_mode": "RGB",
                "mean": MEAN,
                "std": STD,
                "scale": 1 / 255,
                "resize": "bilinear_half_pixel",
            },
            "output": {"kind": "logits", "num_classes": len(LABELS)},
        }
        (d / "model.json").write_text(json.dumps(meta, indent=2))
        (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
        artifacts.append(
            {
                "name": name,
                "format": "tflite",
                "precision": precision[name],
                "path": f"exports/{name}/model.tflite",
                "sha256": sha,
                "size_bytes": len(blob),
                "status": "ok",
                "reason": None,
                "parity": {"status": "ok", "max_abs_diff": 1e-6},
            }
        )
    artifacts.append(
        {
            "name": "onnx",
            "format": "onnx",
            "precision": "fp32",
            "path": "exports/onnx/model.onnx",
            "sha256": "",
            "size_bytes": 0,
            "status": "skipped",
            "reason": "not needed here",
            "parity": None,
        }
    )
    (exports / "manifest.json").write_text(json.dumps({"schema": "edgekd.exports/1", "artifacts": artifacts}, indent=2))
    _write_test_split(run)
    return run


@pytest.fixture(scope="session")
def android_run(tmp_path_factory) -> Path:
    """Built once per session (TensorFlow import + 3 conversions, ~10 s). Do not modify: copy it."""
    return make_run(tmp_path_factory.mktemp("edgekd-android"))


@pytest.fixture
def run_copy(android_run, tmp_path) -> Path:
    """A private copy of the fake run that a test may break."""
    return Path(shutil.copytree(android_run, tmp_path / "run"))


def copy_app(dst: Path) -> Path:
    """android_demo/ without build outputs and without any model installed in its assets."""
    assets = APP / "app/src/main/assets"

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in ("build", ".gradle", ".idea", "local.properties")}
        if Path(folder) == assets:
            skip |= {n for n in names if n != ".gitkeep"}
        return skip

    return Path(shutil.copytree(APP, dst, ignore=ignore))


@pytest.fixture(scope="session")
def app_factory():
    """copy_app as a fixture, for session-scoped fixtures that need their own app copy."""
    return copy_app


@pytest.fixture
def app_copy(tmp_path) -> Path:
    """A private copy of android_demo/ (installs write into it, never into the repository)."""
    return copy_app(tmp_path / "android_demo")
