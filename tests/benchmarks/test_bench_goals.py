"""Goals and headline (benchmarks/goals.py) and the manifest's artifacts as subjects (benchmarks/subjects.py),
both driven by the format table (edgekd.export.formats)."""

import json

from bench_fixtures import _entry, synthetic_report

from edgekd.benchmarks import goals, subjects
from edgekd.export.formats import FORMATS
from edgekd.export.manifest import MANIFEST_SCHEMA, write_manifest
from edgekd.pipeline.rundir import RunDir, sha256_file


def test_headline_order_comes_from_the_format_table():
    assert goals.HEADLINE_PRIORITY == [
        ("tflite", "int8"),
        ("tflite", "fp16"),
        ("tflite", "fp32"),
        ("onnx", "int8"),
        ("onnx", "fp32"),
        ("coreml", "int8"),
        ("coreml", "fp16"),
    ]
    assert FORMATS["tflite-dynamic"].headline_rank is None  # dynamic-range int8 is never the headline
    assert goals.label({"format": "tflite", "precision": "int8"}) == "TFLite int8"
    assert goals.label({"format": "pytorch", "precision": "fp32"}) == "PyTorch fp32"


def _bench(*arts):
    rep = synthetic_report()
    return list(arts), rep["teacher_bench"], rep["student_bench"], rep["bench_machine"]["profiles"], rep


def test_headline_speaks_for_the_best_ranked_artifact_that_passed_parity():
    onnx = _entry("onnx", "student", "onnx", "fp32", "onnxruntime", 6_000_000, 0.912, 1.0, 90.0)
    fp16 = _entry("tflite-fp16", "student", "tflite", "fp16", "litert", 3_000_000, 0.91, 2.0, 80.0)
    int8 = _entry(
        "tflite-int8", "student", "tflite", "int8", "litert", 350_000, 0.90, 1.0, 82.0, parity_status="failed"
    )
    dyn = _entry("tflite-dynamic", "student", "tflite", "dynamic-int8", "litert", 400_000, 0.91, 1.0, 80.0)
    arts, teacher, sref, profiles, rep = _bench(dyn, onnx, int8, fp16)
    head = goals.headline(arts, teacher, sref, profiles, rep)
    assert head.startswith("student fp16 TFLite: 91.0% vs teacher 93.0%"), head
    assert head.endswith("vs teacher ONNX fp32 in onnxruntime)")
    arts, teacher, sref, profiles, rep = _bench(dyn, onnx)
    head = goals.headline(arts, teacher, sref, profiles, rep)
    assert head.startswith("student fp32 ONNX:") and "12x faster" in head  # teacher-onnx 12 ms vs 1 ms
    arts, teacher, sref, profiles, rep = _bench(dyn)
    assert goals.headline(arts, teacher, sref, profiles, rep).startswith("student fp32 PyTorch:")


def test_goals_on_one_runtime():
    onnx = _entry("onnx", "student", "onnx", "fp32", "onnxruntime", 6_000_000, 0.912, 1.0, 90.0)
    int8 = _entry("tflite-int8", "student", "tflite", "int8", "litert", 350_000, 0.90, 1.0, 82.0)
    arts, teacher, sref, profiles, rep = _bench(onnx, int8)
    peaks = rep["bench_machine"]["compute_peak"]
    g = {x["name"]: x for x in goals.compute_goals(arts, teacher, sref, profiles, peaks)}
    assert g["speedup_same_runtime"]["value"] == 12.0 and "onnxruntime" in g["speedup_same_runtime"]["detail"]
    assert g["int8_size_ratio"]["value"] == round(16_000_000 / 350_000, 2)
    assert g["int8_size_ratio"]["status"] == "met" and "TFLite int8" in g["int8_size_ratio"]["detail"]
    teacher[1]["parity_status"] = "failed"  # the ONNX teacher computes something else: fall back to PyTorch
    g = {x["name"]: x for x in goals.compute_goals(arts, teacher, sref, profiles, {})}
    assert g["speedup_same_runtime"]["value"] == round(30.0 / 8.0, 2)
    assert "PyTorch" in g["speedup_same_runtime"]["detail"]


def test_artifact_subjects_take_runtime_from_the_table(tmp_path):
    run = RunDir(tmp_path / "run")
    files = {}
    for name, fname in (
        ("tflite-int8", "model.tflite"),
        ("onnx", "model.onnx"),
        ("odd", "model.bin"),
        ("changed", "model.onnx"),
        ("badmeta", "model.onnx"),
    ):
        p = run.path("exports", name, fname)
        p.parent.mkdir(parents=True)
        p.write_bytes(name.encode())
        files[name] = p
    (files["tflite-int8"].parent / "model.json").write_text(json.dumps({}))  # not an edgekd.model/1 file
    (files["badmeta"].parent / "model.json").write_text("{")

    def art(name, fmt, precision, **kw):
        p = files[name]
        return {
            "name": name,
            "format": fmt,
            "precision": precision,
            "path": str(p.relative_to(run.root)),
            "sha256": sha256_file(p),
            "size_bytes": 1,
            "status": "ok",
            "reason": None,
            "parity": {"status": "passed"},
            **kw,
        }

    arts = [
        art("onnx", "onnx", "fp32"),
        art("tflite-int8", "tflite", "int8"),
        art("odd", "mystery", "fp32"),
        art("changed", "onnx", "int8", sha256="0" * 64),
        art("badmeta", "onnx", "fp32"),
        {
            "name": "coreml",
            "format": "coreml",
            "precision": "fp16",
            "path": None,
            "status": "skipped",
            "reason": "needs coremltools",
        },
    ]
    assert subjects.artifact_subjects(run) == []  # no manifest yet: nothing exported
    write_manifest(run.root, {"schema": MANIFEST_SCHEMA, "artifacts": arts})
    got = {e["name"]: e for e in subjects.artifact_subjects(run)}
    assert got["onnx"]["runtime"] == FORMATS["onnx"].runtime == "onnxruntime"
    assert got["onnx"]["spec"] == {"kind": "onnx", "path": str(files["onnx"]), "layout": None}
    assert got["onnx"]["size_bytes"] == len(b"onnx") and got["onnx"]["parity_status"] == "passed"
    assert got["tflite-int8"]["runtime"] == "litert" and got["tflite-int8"]["status"] == "failed"
    assert "schema is None" in got["tflite-int8"]["reason"]  # model.json read through edgekd.export.manifest
    assert got["odd"]["status"] == "skipped" and got["odd"]["reason"] == "unknown format 'mystery'"
    assert got["odd"]["runtime"] == "mystery" and "spec" not in got["odd"]
    assert got["changed"]["status"] == "failed" and "sha256 differs" in got["changed"]["reason"]
    assert got["badmeta"]["status"] == "failed" and "not valid JSON" in got["badmeta"]["reason"]
    assert got["coreml"]["status"] == "skipped" and got["coreml"]["runtime"] == "coreml"
    assert got["coreml"]["reason"] == "needs coremltools"
    assert list(got) == ["onnx", "tflite-int8", "odd", "changed", "badmeta", "coreml"]  # manifest order


def test_headline_has_macro_f1_and_says_when_kd_did_not_help():
    onnx = _entry("onnx", "student", "onnx", "fp32", "onnxruntime", 6_000_000, 0.912, 1.0, 90.0)
    arts, teacher, sref, profiles, rep = _bench(onnx)
    head = goals.headline(arts, teacher, sref, profiles, rep)
    assert head.startswith(
        "student fp32 ONNX: 91.2% vs teacher 93.0% (\u22121.8 pts), macro-F1 0.80 vs 0.80 (PyTorch),"
    )
    assert goals.kd_warning(rep) is None  # no verdict, no advice: an older report.json
    rep["kd_verdict"] = {"seeds": 3, "kd_gain_mean": -2.5, "kd_gain_ci95": [-4.0, -1.0], "mcnemar_p": 0.01}
    rep["kd_verdict"]["conclusion"] = "no significant difference"
    assert goals.headline(arts, teacher, sref, profiles, rep) == head
    rep["kd_verdict"]["conclusion"] = "KD hurt"
    warned = goals.headline(arts, teacher, sref, profiles, rep)
    assert warned == (
        "KD did not help: the KD student trails the hard-label baseline by 2.5 pts (95% CI [-4.0, -1.0], 3 seeds, "
        "McNemar p=0.01); ship the baseline or retune KD. " + head
    )
    rep["kd_verdict"]["conclusion"] = "KD helped"
    rep["advice"] = ["the teacher cannot help"]
    assert goals.headline(arts, teacher, sref, profiles, rep) == "KD helped, but the teacher cannot help. " + head
    # no measurement at all: the warning alone
    assert goals.headline([], [], [], profiles, rep) == "KD helped, but the teacher cannot help."


def test_unverified_artifacts_never_feed_a_goal_or_the_headline():
    """Issue 13: a CoreML file off macOS (weights_checked / unverified, never measured) is smaller than every
    verified file; the int8 size goal and the headline must still come from verified artifacts only. Seen failing
    on the old goals code, which counted `coreml` int8 entries with status "skipped" toward int8_size_ratio."""
    int8 = _entry("tflite-int8", "student", "tflite", "int8", "litert", 350_000, 0.90, 1.0, 82.0)
    un = {"status": "unverified", "latency_ms": None, "parity_status": "weights_checked", "profile": None}
    cm = _entry("coreml-int8", "student", "coreml", "int8", "coreml", 100_000, None, None, None, **un)
    unmeasured = _entry("coreml", "student", "coreml", "fp16", "coreml", 90_000, None, None, None, **un)
    arts, teacher, sref, profiles, rep = _bench(cm, unmeasured, int8)
    peaks = rep["bench_machine"]["compute_peak"]
    g = {x["name"]: x for x in goals.compute_goals(arts, teacher, sref, profiles, peaks)}
    assert g["int8_size_ratio"]["value"] == round(16_000_000 / 350_000, 2), g["int8_size_ratio"]
    assert "tflite-int8" in g["int8_size_ratio"]["detail"] and "coreml" not in g["int8_size_ratio"]["detail"]
    head = goals.headline(arts, teacher, sref, profiles, rep)
    assert head.startswith("student int8 TFLite:") and "Core ML" not in head
    # only the unverified file: no int8 goal value, the headline falls back to the PyTorch student
    arts, teacher, sref, profiles, rep = _bench(cm)
    g = {x["name"]: x for x in goals.compute_goals(arts, teacher, sref, profiles, peaks)}
    assert g["int8_size_ratio"]["value"] is None and g["int8_size_ratio"]["status"] == "unknown"
    assert goals.headline(arts, teacher, sref, profiles, rep).startswith("student fp32 PyTorch:")
    # a measured artifact whose parity was never checked (no parity status) is not verified either
    nop = _entry("tflite-int8", "student", "tflite", "int8", "litert", 350_000, 0.90, 1.0, 82.0, parity_status=None)
    arts, teacher, sref, profiles, rep = _bench(nop)
    assert goals.headline(arts, teacher, sref, profiles, rep).startswith("student fp32 PyTorch:")
