"""Converter choice by measurement (export/candidates.py, export/to_tflite.py ship_fastest): every candidate is
recorded, the fastest one that passed parity ships, one that failed parity never does. Timings are injected
(no timed assertions); the files are real TFLite models of a tiny student."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export import candidates
from edgekd.export.formats import FORMATS, module_available

needs_tflite = pytest.mark.skipif(
    not all(module_available(m) for m in ("onnx2tf", "tensorflow", "ai_edge_litert")), reason="TFLite stack missing"
)
SIZE = 32


def test_choose_ships_the_fastest_that_passed():
    recs = [
        {"converter": "a", "status": "passed", "latency_ms": 2.0},
        {"converter": "b", "status": "passed", "latency_ms": 1.0},
        {"converter": "c", "status": "passed", "latency_ms": 1.5},
    ]
    c = candidates.choose(recs)
    assert c["chosen"] == "b" and c["best_ms"] == 1.0 and c["shipped_over_fastest"] == 1.0
    assert "a 2.000 ms (2.00x)" in c["why"]
    recs[0]["latency_ms"] = 0.5
    assert candidates.choose(recs)["chosen"] == "a"


def test_choose_never_ships_a_failed_candidate():
    recs = [
        {"converter": "fast-wrong", "status": "failed", "latency_ms": 0.5, "reason": "parity gate missed: x"},
        {"converter": "slow-right", "status": "passed", "latency_ms": 1.0},
    ]
    c = candidates.choose(recs)
    assert c["chosen"] == "slow-right"
    assert c["fastest_built"] == "fast-wrong" and c["shipped_over_fastest"] == 2.0
    assert "not shipped: fast-wrong (parity gate missed: x)" in c["why"]
    recs[1]["status"] = "failed"
    assert candidates.choose(recs)["chosen"] is None
    # one passing candidate, not timed: it ships without a timing
    assert candidates.choose([{"converter": "only", "status": "passed", "latency_ms": None}])["chosen"] == "only"


def _with_marker(content: bytes, name: str) -> bytes:
    """The same model with a metadata entry naming the candidate (kept by the export's own metadata embedding)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buf = fb.BufferT()
    buf.data = np.frombuffer(name.encode(), np.uint8)
    model.buffers.append(buf)
    m = fb.MetadataT()
    m.name = "test.candidate"
    m.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [m]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _marker(content: bytes) -> str:
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"test.candidate":
            return bytes(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()).decode()
    return ""


def _broken(content: bytes) -> bytes:
    """The last FULLY_CONNECTED's weights permuted: loads and runs, computes something else."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    sub = model.subgraphs[0]
    fc = [
        op
        for op in sub.operators
        if model.operatorCodes[op.opcodeIndex].builtinCode == fb.BuiltinOperator.FULLY_CONNECTED
    ][-1]
    buf = model.buffers[sub.tensors[fc.inputs[1]].buffer]
    w = np.frombuffer(bytes(buf.data), np.float32).copy()
    buf.data = np.frombuffer(np.random.default_rng(1).permutation(w).tobytes(), np.uint8)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    from edgekd.export.context import ExportContext
    from edgekd.export.int8_latency import _model as bn_calibrated_model

    rng = np.random.default_rng(3)
    calib = (rng.normal(0, 1, (24, 3, 1, 1)) + rng.normal(0, 0.7, (24, 3, SIZE, SIZE))).astype(np.float32)
    return ExportContext(
        model=bn_calibrated_model(SIZE, calib),
        arch="mobilenet_v3_small",
        labels=list("abcd"),
        image_size=SIZE,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        calib=calib,
        work=tmp_path_factory.mktemp("cand"),
        threads=1,
        source_sha256="-",
    )


@needs_tflite
@pytest.mark.parametrize("fast", ["b", "a"])
def test_the_fastest_passing_candidate_ships_and_a_wrong_one_never(tiny_ctx, tmp_path, monkeypatch, fast):
    from edgekd.export import metadata as md
    from edgekd.export import to_tflite

    def build(name):
        def fn(ctx, precision):
            content = to_tflite.onnx2tf_float(ctx, precision)
            return _broken(content) if name == "wrong" else _with_marker(content, name)

        return fn

    for n in ("a", "b", "wrong"):
        monkeypatch.setitem(to_tflite.FLOAT_CANDIDATES, n, (build(n), (), f"candidate {n}"))
    tiny_ctx.options["tflite_converters"] = ["a", "b", "wrong"]
    fake = {"a": 2.0, "b": 2.0, "wrong": 0.5, fast: 1.0}  # the wrong file is the fastest of all
    seen = {}

    def timer(contents, **kw):
        seen.update(kw)
        return {n: {"median_ms": fake[n], "rounds": kw["rounds"], "runs_per_round": kw["runs"]} for n in contents}

    out = tmp_path / "model.tflite"
    meta = {"labels": list("abcd")}
    info = to_tflite.ship_fastest(tiny_ctx, FORMATS["tflite"], out, meta, "fp32", timer=timer)
    recs = {r["converter"]: r for r in info["candidates"]}
    assert list(recs) == ["a", "b", "wrong"]  # every candidate recorded, in config order
    assert recs["wrong"]["status"] == "failed" and "parity gate missed" in recs["wrong"]["reason"]
    assert recs["a"]["status"] == recs["b"]["status"] == "passed"
    assert all(recs[n]["latency_ms"] == fake[n] for n in recs) and recs["a"]["ops"]["CONV_2D"] > 0
    c = info["choice"]
    assert c["chosen"] == c["shipped"] == fast and info["converter"] == f"candidate {fast}"
    assert c["fastest_built"] == "wrong" and c["shipped_over_fastest"] == 2.0
    shipped = out.read_bytes()
    assert _marker(shipped) == fast  # the file written is the chosen candidate's
    assert md.read_tflite_bytes(shipped)["labels"] == list("abcd")
    assert seen["threads"] == tiny_ctx.threads and seen["rounds"] == 40


@needs_tflite
def test_interleaved_latency_times_every_candidate_through_the_runtime_layer(tiny_ctx):
    from edgekd.export import to_tflite

    content = to_tflite.onnx2tf_float(tiny_ctx, "fp32")
    ticks = iter(range(0, 10**9, 1000))  # a fake clock: every reading 1 us later
    res = candidates.interleaved_latency(
        {"x": content, "y": content}, tiny_ctx.calib, 1, rounds=3, runs=2, warmup=1, clock=lambda: next(ticks)
    )
    assert set(res) == {"x", "y"}
    assert res["x"]["median_ms"] == pytest.approx(0.0005) and res["x"]["rounds"] == 3  # 1 us over 2 runs


def test_config_lists_the_candidates():
    from edgekd.pipeline.config import ExportConfig
    from edgekd.pipeline.errors import EdgekdError  # noqa: F401  (bad values are a pydantic error -> exit 2)

    assert ExportConfig().tflite_converters == ["onnx2tf", "litert-torch"]
    with pytest.raises(Exception, match="tflite_converters"):
        ExportConfig(tflite_converters=["tf2onnx"])
