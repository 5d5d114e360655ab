"""The runtime layer (export/runtimes.py): the int8 rounding rule, dequantisation, and runners that give
the same logits through __call__ (chunked, padded) as through prepare/infer/postprocess."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export import runtimes
from edgekd.export.runtimes import dequantize, quantize
from edgekd.pipeline.errors import EdgekdError

# ---------------------------------------------------------------------------------------------
# quantize / dequantize


def test_quantize_rounds_half_away_from_zero():
    """np.rint would give 2, -2, 0, -0, 2, 4 (halves to even); TFLite and the Java core give these."""
    x = np.array([2.5, -2.5, 0.5, -0.5, 1.5, 3.5, 0.49, -0.51], np.float32)
    assert quantize(x, 1.0, 0, np.int8).tolist() == [3, -3, 1, -1, 2, 4, 0, -1]
    # the zero point is added after rounding: round(2.5) + 2 = 5, where rint(2.5 + 2) = 4
    assert quantize(np.array([2.5, -2.5], np.float32), 1.0, 2, np.int8).tolist() == [5, -1]
    # x / scale = 2.5 exactly (scale a power of two)
    assert quantize(np.array([1.25, -1.25], np.float32), 0.5, 0, np.int8).tolist() == [3, -3]


def test_quantize_clips_at_the_dtype_limits():
    x = np.array([-1000.0, -128.6, 127.4, 127.6, 1000.0], np.float32)
    q = quantize(x, 1.0, 0, np.int8)
    assert q.dtype == np.int8 and q.tolist() == [-128, -128, 127, 127, 127]
    u = quantize(np.array([-5.0, 0.0, 254.5, 300.0], np.float32), 1.0, 0, np.uint8)
    assert u.dtype == np.uint8 and u.tolist() == [0, 0, 255, 255]
    assert quantize(np.array([-1.0], np.float32), 0.1, 128, np.uint8).tolist() == [118]


def test_dequantize_round_trip():
    q = np.arange(-128, 128, dtype=np.int8)
    scale, zp = 0.0371, -3
    f = dequantize(q, scale, zp)
    assert f.dtype == np.float32
    assert np.array_equal(quantize(f, scale, zp, np.int8), q)
    x = np.random.default_rng(0).uniform(-4.0, 4.0, 1000).astype(np.float32)
    back = dequantize(quantize(x, scale, zp, np.int8), scale, zp)
    assert np.abs(back - x).max() <= scale / 2 + 1e-6


# ---------------------------------------------------------------------------------------------
# runners on a tiny ONNX model (global average pool + matmul; fixed or dynamic batch, NCHW or NHWC)

K = 5


def _weights() -> np.ndarray:
    return np.random.default_rng(3).normal(0, 1, (3, K)).astype(np.float32)


def _onnx_model(batch, nhwc: bool = False) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = [batch, 4, 4, 3] if nhwc else [batch, 3, 4, 4]
    axes = [1, 2] if nhwc else [2, 3]
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=axes, keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, K])],
        [numpy_helper.from_array(_weights(), "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _by_parts(runner, x: np.ndarray) -> np.ndarray:
    """One image at a time through the three steps the benchmark worker times separately."""
    return np.concatenate([runner.postprocess(runner.infer(runner.prepare(x[i : i + 1]))) for i in range(len(x))])


@pytest.mark.parametrize("batch,nhwc,n", [("N", False, 131), (4, False, 7), ("N", True, 5)])
def test_onnx_runner_call_matches_the_steps(tmp_path, batch, nhwc, n):
    pytest.importorskip("onnxruntime")
    content = _onnx_model(batch, nhwc)
    x = np.random.default_rng(1).normal(0, 1, (n, 3, 4, 4)).astype(np.float32)  # always NCHW in
    ref = x.mean(axis=(2, 3)) @ _weights()
    r = runtimes.OnnxRunner(content, threads=1)
    assert r.layout == ("NHWC" if nhwc else "NCHW") and r.batch == (batch if isinstance(batch, int) else None)
    got = r(x)
    assert got.dtype == np.float32 and got.shape == (n, K)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    if batch == "N":  # a fixed-batch model only takes its own batch size in prepare/infer
        # (onnxruntime's float sums may differ in the last bit between batch sizes)
        np.testing.assert_allclose(_by_parts(r, x), got, rtol=1e-6, atol=1e-7)
    # the same file from disk through load_runner
    p = tmp_path / "m.onnx"
    p.write_bytes(content)
    np.testing.assert_array_equal(runtimes.load_runner(p, 1)(x), got)


def test_load_runner_errors(tmp_path):
    with pytest.raises(EdgekdError, match="artifact not found"):
        runtimes.load_runner(tmp_path / "nope.onnx")
    with pytest.raises(EdgekdError, match="no runtime for"):
        runtimes.load_runner(tmp_path / "m.bin")


def test_coreml_is_unsupported_off_macos(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes.sys, "platform", "linux")
    assert runtimes.can_run("coreml") == "prediction needs macOS" and runtimes.can_run("onnx") is None
    (tmp_path / "m.mlpackage").mkdir()
    with pytest.raises(runtimes.Unsupported, match="needs macOS"):
        runtimes.load_runner(tmp_path / "m.mlpackage")


@pytest.mark.slow
def test_tflite_runner_quantizes_int8_inputs():
    """An int8-I/O TFLite file (batch 1, NHWC): input quantised with `quantize`, output dequantised, odd N
    padded through the fixed batch; __call__ equals the three steps."""
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from builders import full_int8_tflite

    w = tf.constant(np.random.default_rng(0).normal(0, 0.5, (3, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 6, 3], tf.float32)])
    def f(x):
        return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), w)

    def rep():
        r = np.random.default_rng(1)
        for _ in range(16):
            yield [r.normal(0, 1, (1, 6, 6, 3)).astype(np.float32)]

    content = full_int8_tflite(f, rep)
    r = runtimes.TfliteRunner(content, threads=1)
    assert r.layout == "NHWC" and r.batch == 1 and r.info["input_type"] == "int8"
    x = np.random.default_rng(2).normal(0, 1, (5, 3, 6, 6)).astype(np.float32)  # NCHW in
    got = r(x)
    ref = x.mean(axis=(2, 3)) @ w.numpy()
    assert got.dtype == np.float32 and got.shape == (5, 4)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 0.05
    np.testing.assert_array_equal(_by_parts(r, x), got)
    scale, zp = r.input_details["quantization"]
    np.testing.assert_array_equal(r.prepare(x[:1]), quantize(x[:1].transpose(0, 2, 3, 1), scale, zp, np.int8))
    # builtin kernels only: every op visible; with XNNPACK the ops become DELEGATE partitions
    plain = [o["op_name"] for o in runtimes.tflite_ops(runtimes.tflite_interpreter(content, delegates=False))]
    assert "FULLY_CONNECTED" in plain and "DELEGATE" not in plain
    assert "DELEGATE" in [o["op_name"] for o in runtimes.tflite_ops(r.interpreter)]
