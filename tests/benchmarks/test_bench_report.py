"""report.md / report.html rendering, the schema and its documentation, --compare and --save-results."""

import base64
import json
import re
from pathlib import Path

import pytest
from bench_fixtures import synthetic_report, write_synthetic_run

from edgekd.benchmarks import compare, schema
from edgekd.benchmarks.report import render
from edgekd.pipeline.rundir import RunDir

SCHEMA_MD = Path(__file__).resolve().parents[2] / "benchmarks" / "SCHEMA.md"


def test_render_markdown_and_self_contained_html(synthetic_run):
    md, htm = render(RunDir(synthetic_run))
    text = md.read_text()
    assert "**student int8 TFLite: 91.0% vs teacher 93.0%" in text
    assert "| artifact | model | format | precision | profile | threads |" in text and "| status |" in text
    assert "| tflite-int8 | student | tflite | int8 | tablet | 2 of 4 |" in text
    assert "coreml (coreml fp16): skipped — prediction needs macOS" in text
    assert "## Goals" in text and "speedup_same_runtime" in text
    assert "PASS max_accuracy_drop" in text and "PASS parity onnx" in text and "NEEDS MACOS parity coreml" in text
    assert "leakage: 1 image(s) identical across splits" in text and "skipped (unreadable) files: 1" in text
    for name in ("pareto", "size_memory", "confusion", "training_curves"):
        assert f"(report_files/{name}.png)" in text
        assert (synthetic_run / "report_files" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = htm.read_text()
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(https?:)?//', page), "report.html must open offline"
    assert "<table>" in page and "91.0% vs teacher 93.0%" in page


def test_render_without_bench_says_so(tmp_path):
    root = write_synthetic_run(tmp_path / "run", with_bench=False)
    md, htm = render(RunDir(root))
    text = md.read_text()
    assert "Not benchmarked yet" in text and "No goals evaluated yet" in text
    assert "(report_files/confusion.png)" in text and "pareto" not in text
    assert htm.exists()


def test_render_after_the_evaluate_stage_only(tmp_path):
    """What every stage renders before the bench exists: report.json `machine` is THE machine description."""
    from edgekd.pipeline.machine import describe

    root = write_synthetic_run(tmp_path / "run", with_bench=False)
    rep = json.loads((root / "report.json").read_text())
    rep["machine"] = m = describe()
    (root / "report.json").write_text(json.dumps(rep))
    text = render(RunDir(root))[0].read_text()
    assert "Not benchmarked yet" in text and "No goals evaluated yet" in text
    machine = text.split("## Machine\n", 1)[1].split("\n## ", 1)[0]
    assert f"- CPU: {m['cpu']}, {m['cores']} logical cores ({m['cores_available']} available" in machine
    assert f"- platform: {m['platform']}, Python {m['python']}" in machine
    assert "runtimes: " in machine and f"measured {m['date']}" in machine and "profile " not in machine


def test_render_with_no_artifacts(tmp_path):
    root = tmp_path / "run"
    write_synthetic_run(root)
    rep = json.loads((root / "report.json").read_text())
    rep["artifacts"] = []
    (root / "report.json").write_text(json.dumps(rep))
    text = render(RunDir(root))[0].read_text()
    assert "No exported artifacts yet" in text and "teacher-onnx" in text


def test_render_survives_an_empty_report(tmp_path):
    (tmp_path / "run").mkdir()
    md, htm = render(RunDir(tmp_path / "run"))
    assert "report.json is empty" in md.read_text() and htm.exists()


def test_schema_accepts_the_report_and_rejects_breakage():
    rep = synthetic_report()
    assert schema.validate_report(rep) == []
    bad = json.loads(json.dumps(rep))
    del bad["artifacts"][0]["latency_ms"]["p99"]
    bad["artifacts"][1]["status"] = "great"
    bad["artifacts"][1]["size_bytes"] = "big"
    bad["teacher_bench"][0]["surprise"] = 1
    bad["goals"][0]["status"] = "yes"
    errs = "\n".join(schema.validate_report(bad))
    for frag in (
        "artifacts[0].latency_ms: missing required key 'p99'",
        "artifacts[1].status: 'great'",
        "artifacts[1].size_bytes: expected integer/null",
        "teacher_bench[0]: unexpected key 'surprise'",
        "goals[0].status",
    ):
        assert frag in errs
    assert schema.validate_report({}) != []


def test_schema_md_documents_every_field():
    doc = SCHEMA_MD.read_text()
    for key in (
        list(schema.MEASUREMENT_PROPERTIES)
        + list(schema.GOAL["properties"])
        + list(schema.REPORT_BENCH_SCHEMA["properties"])
        + list(schema.LATENCY["properties"])
    ):
        assert f"`{key}`" in doc, f"SCHEMA.md does not document {key}"


def test_compare_two_runs(tmp_path):
    a = write_synthetic_run(tmp_path / "a")
    b = write_synthetic_run(tmp_path / "b")
    rep = json.loads((b / "report.json").read_text())
    rep["artifacts"][0]["latency_ms"]["p50"] = 2.0
    rep["student"]["accuracy"] = 0.922
    (b / "report.json").write_text(json.dumps(rep))
    text, path = compare.compare(a, b)
    assert path == a / "compare-b.md" and path.read_text() == text
    assert "| metric | a | b | Δ (B vs A) |" in text
    assert "| onnx [tablet] | 91.2% | 91.2% | 1.000 | 2.000 | +100% | 6.00 | 6.00 | 90 | 90 | ok | ok |" in text
    assert "| goal speedup_same_runtime (>= 10x) | 12x | 12x | +0.00 |" in text
    assert "| student accuracy (PyTorch) | 91.2% | 92.2% | +1.0 pts |" in text


def test_compare_needs_reports(tmp_path):
    from edgekd.pipeline.errors import EdgekdError

    a = write_synthetic_run(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekdError, match="no report.json"):
        compare.compare(a, tmp_path / "empty")


def test_save_results(synthetic_run, tmp_path):
    path = compare.save_results(
        RunDir(synthetic_run), "quick-test", "edgekd bench run --save-results quick-test", results_dir=tmp_path
    )
    text = path.read_text()
    assert path.name == "quick-test.md"
    assert "command: `edgekd bench run --save-results quick-test`" in text
    assert "machine: Test CPU" in text and "date: 2026-01-01" in text and "| tflite-int8 |" in text
    from edgekd.pipeline.errors import EdgekdError

    with pytest.raises(EdgekdError):
        compare.save_results(RunDir(synthetic_run), "../escape", "x", results_dir=tmp_path)
