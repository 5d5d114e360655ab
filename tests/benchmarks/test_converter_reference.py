"""The converter reference row (shipped TFLite file vs the best candidate, from the manifest), the converter goal,
the CPU flags and the int8-where-it-pays sentence in the bench report (benchmarks/goals.py, benchmarks/report.py)."""

from __future__ import annotations

from edgekd.benchmarks import goals, report


def _manifest_entry(shipped_ms: float, other_ms: float, other_status: str = "passed") -> dict:
    cands = [
        {"converter": "onnx2tf", "status": "passed", "latency_ms": shipped_ms, "size_bytes": 10},
        {"converter": "litert-torch", "status": other_status, "latency_ms": other_ms, "size_bytes": 11},
    ]
    from edgekd.export.candidates import choose

    choice = choose(cands)
    choice["shipped"] = choice["chosen"]
    return {"name": "tflite", "precision": "fp32", "details": {"candidates": cands, "choice": choice}}


def _measured(name: str, fmt: str, precision: str, p50: float) -> dict:
    return {
        "name": name,
        "format": fmt,
        "precision": precision,
        "status": "ok",
        "parity_status": "passed",
        "profile": "tablet",
        "latency_ms": {"p50": p50},
    }


def test_reference_row_in_the_bench_report():
    arts = [_measured("tflite", "tflite", "fp32", 1.3)]
    ref = goals.converter_reference([_manifest_entry(1.0, 1.2), {"name": "onnx", "details": {}}], arts, "tablet")
    assert len(ref) == 1  # only artifacts with a converter choice
    r = ref[0]
    assert (r["shipped"], r["shipped_ms"], r["fastest_built"], r["shipped_over_best"]) == (
        "onnx2tf",
        1.0,
        "onnx2tf",
        1.0,
    )
    assert r["bench_p50_ms"] == 1.3
    from types import SimpleNamespace

    rep = {"artifacts": arts, "converter_reference": ref, "int8_advice": "int8 does not pay here"}
    md = report.to_markdown(report.benchmark_section(SimpleNamespace(root="RUN"), rep, {}))
    assert "int8 on this CPU: int8 does not pay here" in md
    assert "Converter reference" in md and "| tflite | fp32 | onnx2tf | 1.000 | onnx2tf | 1.000 | 1.00x |" in md
    assert goals.converter_goal(ref)["status"] == "met"


def test_converter_goal_fails_when_a_faster_file_failed_parity():
    ref = goals.converter_reference([_manifest_entry(1.0, 0.8, other_status="failed")], [], "tablet")
    assert ref[0]["shipped"] == "onnx2tf" and ref[0]["fastest_built"] == "litert-torch"
    g = goals.converter_goal(ref)
    assert g["status"] == "not met" and g["value"] == 1.25 and "litert-torch" in g["detail"]
    assert goals.converter_goal([])["status"] == "unknown"


def test_int8_slower_than_float_is_said_and_the_float_file_recommended():
    rep = {"bench_machine": {"cpu_flags": ["avx2", "fma"]}}
    arts = [_measured("tflite-int8", "tflite", "int8", 2.6), _measured("tflite", "tflite", "fp32", 2.1)]
    advice = goals.int8_advice(arts, "tablet", rep)
    assert advice and "no int8 dot-product instructions" in advice and "ship tflite (fp32)" in advice
    assert "1.24x slower" in advice
    assert goals.int8_advice(arts, "tablet", {"bench_machine": {"cpu_flags": ["avx512_vnni"]}}).count("avx512_vnni")
    arts[0]["latency_ms"]["p50"] = 1.5  # int8 wins: nothing to say
    assert goals.int8_advice(arts, "tablet", rep) is None


def test_machine_section_shows_the_cpu_flags_and_onnxruntime_options(tmp_path):
    rep = {
        "bench_machine": {
            "cpu": "x",
            "cores": 2,
            "cpu_flags": ["avx2", "fma"],
            "runtime_options": {"onnxruntime": {"providers": ["CPUExecutionProvider"], "session_config": {"a": "0"}}},
        }
    }
    md = report.to_markdown(report.machine_section(None, rep, {}))
    assert "CPU flags: avx2 fma (no int8 dot-product instructions)" in md
    assert "onnxruntime: CPUExecutionProvider" in md and "a=0" in md
