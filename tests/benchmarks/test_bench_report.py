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
    assert "coreml (coreml fp16): unverified — export status weights_checked: Core ML itself was not run" in text
    assert "## Goals" in text and "speedup_same_runtime" in text
    assert "PASS max_accuracy_drop" in text and "PASS parity onnx" in text and "WEIGHTS_CHECKED parity coreml" in text
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
    import json

    saved = json.loads((tmp_path / "quick-test.json").read_text())  # the JSON a program (and README) reads
    rep = json.loads((synthetic_run / "report.json").read_text())
    assert saved["command"] == "edgekd bench run --save-results quick-test"
    assert saved["student"]["accuracy"] == rep["student"]["accuracy"] and "confusion_matrix" not in saved["student"]
    from edgekd.pipeline.errors import EdgekdError

    with pytest.raises(EdgekdError):
        compare.save_results(RunDir(synthetic_run), "../escape", "x", results_dir=tmp_path)


def _with_verdict(rep: dict, conclusion: str = "KD hurt", advice=None) -> dict:
    rep["student"].update(accuracy=0.86, accuracy_std=0.01, macro_f1=0.78, macro_f1_std=0.02, seeds=2)
    rep["student"]["per_seed"] = [{"seed_index": 0, "accuracy": 0.87, "macro_f1": 0.79}, {"seed_index": 1}]
    rep["baseline"].update(accuracy=0.89, accuracy_std=0.0, macro_f1=0.8, macro_f1_std=0.0, seeds=2)
    rep["kd_gain_points"] = -3.0
    rep["kd_verdict"] = {
        "seeds": 2,
        "test_images": 40,
        "kd_gain_mean": -3.0,
        "kd_gain_std": 1.41,
        "kd_gain_ci95": [-5.5, -0.5] if conclusion == "KD hurt" else [-2.0, 4.0],
        "mcnemar_p": 0.031,
        "mcnemar_p_per_seed": [0.031, 0.2],
        "student_accuracy": [0.87, 0.85],
        "baseline_accuracy": [0.89, 0.89],
        "conclusion": conclusion,
    }
    rep["advice"] = advice if advice is not None else ["the teacher (93.0%) is no better than ..."]
    return rep


def test_render_shows_the_kd_verdict_advice_and_per_class_recall(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    rep = _with_verdict(json.loads((root / "report.json").read_text()))
    rep["baseline"]["per_class_recall"] = {c: 0.5 for c in rep["baseline"]["per_class_recall"]}
    (root / "report.json").write_text(json.dumps(rep))
    md, htm = render(RunDir(root))
    text = md.read_text()
    head = text.split("\n\n")[1]
    # the headline says it in words, then the measured sentence with macro-F1 beside accuracy
    assert head.startswith("**KD did not help: the KD student trails the hard-label baseline by 3.0 pts")
    assert "(95% CI [-5.5, -0.5], 2 seeds, McNemar p=0.031)" in head and "no better than ..." in head
    assert "student int8 TFLite: 91.0% vs teacher 93.0% (\u22122.0 pts), macro-F1 0.79 vs 0.80 (PyTorch)" in head
    assert "86.0% ± 1.0, macro-F1 0.78" in text  # mean ± std over seeds in the summary
    assert "| student (KD) | mobilenet_v3_small | 1.50 M | 86.0% ± 1.0 | 0.780 ± 0.020 |" in text
    verdict = text.split("## Did distillation help?\n", 1)[1].split("\n## ", 1)[0]
    assert "KD hurt: KD gain (student − baseline accuracy) -3.00 pts ± 1.41 (std over 2 seeds)" in verdict
    assert "95% CI [-5.50, -0.50] (paired bootstrap over the 40 test images), McNemar p=0.031" in verdict
    assert "| 1 | 85.0% | 89.0% | -4.0 | 0.2 |" in verdict
    assert "### Advice" in verdict and "- the teacher (93.0%) is no better than ..." in verdict
    recall = text.split("## Per-class recall\n", 1)[1].split("\n## ", 1)[0]
    assert "| class | teacher | student | baseline |" in recall and "| 80.0% | 80.0% | 50.0% |" in recall
    page = htm.read_text()
    assert "KD did not help: the KD student trails" in page and "Did distillation help?" in page


def test_headline_without_findings_and_on_older_runs(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    rep = _with_verdict(
        json.loads((root / "report.json").read_text()), conclusion="no significant difference", advice=[]
    )
    (root / "report.json").write_text(json.dumps(rep))
    text = render(RunDir(root))[0].read_text()
    assert "KD did not help" not in text and "**student int8 TFLite: 91.0% vs teacher 93.0%" in text
    assert "KD -3.0 pts (95% CI [-2.0, +4.0], 2 seeds, McNemar p=0.031): no significant difference." in text
    # an older report.json (no verdict, no advice, no per-seed keys) renders as before, without the section
    old = write_synthetic_run(tmp_path / "old", with_bench=False)
    text = render(RunDir(old))[0].read_text()
    assert "Did distillation help?" not in text and "(KD +2.2 pts)" not in text and "KD +2.2 pts." in text
    assert "KD did not help" not in text


def test_the_models_table_shows_each_student_s_fit_on_training_images():
    from edgekd.benchmarks.report import models_section

    m = {"arch": "mobilenet_v3_small", "params": 1.5e6, "accuracy": 0.7, "macro_f1": 0.4, "ece": 0.1}
    rep = {
        "teacher": {**m, "arch": "efficientnet_lite0"},
        "student": {**m, "agreement_teacher": 0.8, "agreement_teacher_train": 0.844, "fidelity_images": 1771},
        "baseline": {**m, "agreement_teacher": 0.78, "agreement_teacher_train": 0.777},
    }
    (_, _), (_, header, rows), (_, text) = models_section(None, rep, {})
    assert header[-1] == "on train images"
    assert [r[-1] for r in rows] == ["—", "84.4%", "77.7%"]
    assert "1771 training images" in text
