"""LiteRT runner: NHWC fp32 and full-int8 (quantised input and output) tiny models in the worker."""

import numpy as np
import pytest
from builders import full_int8_tflite

from edgekd.benchmarks.measure import run_worker

pytestmark = pytest.mark.slow  # TensorFlow import + two conversions, ~10 s

SIZE = 32


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32))
    fw = tf.constant(rng.normal(0, 0.8, (8, 4)).astype(np.float32))

    def body(x):
        return tf.matmul(tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, w, 2, "SAME")), [1, 2]), fw)

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def nhwc(x):
        return body(x)

    d = tmp_path_factory.mktemp("tflite")
    conv = tf.lite.TFLiteConverter.from_concrete_functions([nhwc.get_concrete_function()], nhwc)
    (d / "fp32.tflite").write_bytes(conv.convert())

    def representative():
        r = np.random.default_rng(1)
        for _ in range(16):
            yield [r.normal(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)]

    (d / "int8.tflite").write_bytes(full_int8_tflite(nhwc, representative))
    x = np.random.default_rng(2).normal(size=(6, 3, SIZE, SIZE)).astype(np.float32)  # NCHW, as the bench feeds
    np.save(d / "x.npy", x)
    ref = body(tf.constant(x.transpose(0, 2, 3, 1))).numpy()
    return d, ref


@pytest.mark.parametrize("name,layout,tol", [("fp32", "NHWC", 1e-4), ("fp32", None, 1e-4), ("int8", "NHWC", 0.35)])
def test_tflite_worker(tflite_models, tmp_path, name, layout, tol):
    d, ref = tflite_models
    res = run_worker(
        {"kind": "tflite", "path": str(d / f"{name}.tflite"), "layout": layout},
        d / "x.npy",
        tmp_path / "m.json",
        threads=1,
        min_queries=10,
        min_seconds=0,
        warmup=1,
        logits_out=tmp_path / "l.npy",
        timeout=120,
    )
    assert res["status"] == "ok", res
    assert res["runtime"]["runtime"] == "litert" and res["runtime"]["layout"] == "NHWC"
    assert res["runtime"]["input_type"] == ("int8" if name == "int8" else "float32")
    logits = np.load(tmp_path / "l.npy")
    assert logits.dtype == np.float32 and logits.shape == ref.shape
    assert np.abs(logits - ref).max() < tol * max(1.0, np.abs(ref).max())
