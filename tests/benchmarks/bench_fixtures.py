"""Helpers for the benchmark tests: a tiny conv net, a synthetic report, a small real run directory.

A plain module (not conftest) so tests can import it: tests/benchmarks is on sys.path under pytest."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

SIZE = 32
CLASSES = ["defect_0", "defect_1_3", "defect_2_3", "defect_1"]


def tiny_net():
    import torch
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
            self.c2 = nn.Conv2d(8, 16, 3, 2, 1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    return Tiny().eval()


def export_onnx(model, path: Path, size: int = SIZE) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


# ----------------------------------------------------------------------------------------
# a synthetic report.json (no measuring) for rendering and schema tests


def _entry(name, model, fmt, precision, runtime, size, acc, p50, rss, profile="tablet", **kw):
    p50 = 1.0 if p50 is None else p50
    lat = {
        "mean": p50 * 1.05,
        "std": p50 * 0.1,
        "min": p50 * 0.9,
        "p50": p50,
        "p90": p50 * 1.1,
        "p95": p50 * 1.2,
        "p99": p50 * 1.5,
        "max": p50 * 2,
    }
    e = {
        "name": name,
        "model": model,
        "format": fmt,
        "precision": precision,
        "runtime": runtime,
        "runtime_version": "1.0",
        "path": f"exports/{name}/model.{fmt}",
        "sha256": "ab" * 32,
        "size_bytes": size,
        "status": "ok",
        "reason": None,
        "profile": profile,
        "threads": 2,
        "threads_requested": 4,
        "cpus": [0, 1],
        "pinned": True,
        "accuracy": acc,
        "agreement_teacher": 0.95,
        "agreement_student": 0.99,
        "accuracy_images": 40,
        "max_abs_logit_diff_vs_pytorch": 1e-5,
        "latency_ms": lat,
        "throughput_ips": 1000 / p50,
        "queries": 100,
        "timed_seconds": 1.0,
        "early_stop": False,
        "peak_rss_mb": rss,
        "baseline_rss_mb": 30.0,
        "import_ms": 50.0,
        "load_ms": 20.0,
        "first_inference_ms": p50 * 3,
        "macs": 56_000_000,
        "compute_bound_ms": 0.9,
        "parity_status": "passed",
        "parity": {"status": "passed", "max_abs_diff": 1e-5, "top1_agreement": 1.0},
        "bench_json": None,
    }
    e.update(kw)
    return e


def synthetic_report(with_bench: bool = True) -> dict:
    cm = [[8, 1, 1, 0], [1, 7, 1, 1], [0, 2, 7, 1], [0, 0, 1, 9]]
    recall = {c: 0.8 for c in CLASSES}

    def model(arch, acc, params):
        return {
            "arch": arch,
            "params": params,
            "accuracy": acc,
            "macro_f1": 0.8,
            "per_class_recall": recall,
            "confusion_matrix": cm,
            "ece": 0.05,
            "agreement_teacher": 0.9,
            "num_images": 40,
        }

    rep = {
        "edgekd_version": "0.1.0",
        "run_dir": "x",
        "teacher": {k: v for k, v in model("efficientnet_lite2", 0.93, 4_000_000).items() if k != "agreement_teacher"},
        "student": model("mobilenet_v3_small", 0.912, 1_500_000),
        "baseline": model("mobilenet_v3_small", 0.89, 1_500_000),
        "kd_gain_points": 2.2,
        "gates": [
            {
                "name": "max_accuracy_drop",
                "limit_points": 3.0,
                "value_points": 1.8,
                "passed": True,
                "message": "student trails teacher by 1.80 points (limit 3)",
            }
        ],
        "data": {
            "source": "elpv",
            "classes": CLASSES,
            "num_images": 160,
            "class_counts": {c: 40 for c in CLASSES},
            "split_counts": {
                "train": {c: 27 for c in CLASSES},
                "val": {c: 3 for c in CLASSES},
                "test": {c: 10 for c in CLASSES},
            },
            "imbalance_ratio": 1.0,
            "majority_class_share_test": 0.25,
            "skipped": [{"path": "bad.png", "reason": "cannot identify image file"}],
            "cross_split_duplicates": [{"sha256": "cd" * 32, "keys": ["a.png", "b.png"]}],
        },
        "config": {"name": "elpv", "preset": "quick"},
        "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11", "torch": "2", "platform": "Linux", "gpu": None},
        "stages": {"data": 1.0, "evaluate": 2.0},
    }
    if not with_bench:
        return rep
    rep["teacher_bench"] = [
        _entry(
            "teacher-pytorch",
            "teacher",
            "pytorch",
            "fp32",
            "pytorch",
            16_000_000,
            0.93,
            30.0,
            700.0,
            parity_status=None,
            parity=None,
        ),
        _entry("teacher-onnx", "teacher", "onnx", "fp32", "onnxruntime", 16_000_000, 0.93, 12.0, 120.0, parity=None),
    ]
    rep["student_bench"] = [
        _entry(
            "student-pytorch",
            "student",
            "pytorch",
            "fp32",
            "pytorch",
            6_000_000,
            0.912,
            8.0,
            690.0,
            parity_status=None,
            parity=None,
        )
    ]
    rep["artifacts"] = [
        _entry("onnx", "student", "onnx", "fp32", "onnxruntime", 6_000_000, 0.912, 1.0, 90.0),
        _entry("tflite-int8", "student", "tflite", "int8", "litert", 350_000, 0.91, 1.0, 82.0),
        _entry(
            "coreml",
            "student",
            "coreml",
            "fp16",
            "coreml",
            3_000_000,
            None,
            None,
            None,
            status="unverified",
            reason="export status weights_checked: Core ML itself was not run (needs macOS)",
            parity_status="weights_checked",
            latency_ms=None,
            profile=None,
            threads=None,
            throughput_ips=None,
            agreement_teacher=None,
            agreement_student=None,
            first_inference_ms=None,
            load_ms=None,
            peak_rss_mb=None,
        ),
    ]
    rep["bench_machine"] = {
        "cpu": "Test CPU",
        "cores": 2,
        "cores_available": 2,
        "platform": "Linux",
        "python": "3.11",
        "clock_ghz": 2.0,
        "clock_source": "test",
        "simd": "AVX2+FMA",
        "runtimes": {"onnxruntime": "1.32.0"},
        "date": "2026-01-01T00:00:00",
        "profiles": [
            {
                "profile": "tablet",
                "threads_requested": 4,
                "threads": 2,
                "cpus": [0, 1],
                "pinned": True,
                "cores_available": 2,
            }
        ],
        "compute_peak": {"tablet": {"peak_gmacs_per_s": 64.0, "assumption": "test assumption"}},
        "macs": {"teacher": 900_000_000, "student": 56_000_000},
    }
    rep["bench_settings"] = {"min_queries": 100, "min_seconds": 1.0, "warmup": 10, "accuracy_images": 40}
    rep["goals"] = [
        {"name": "speedup_same_runtime", "target": ">= 10x", "value": 12.0, "status": "met", "detail": "test"},
        {"name": "int8_size_ratio", "target": ">= 40x", "value": 45.7, "status": "met", "detail": "t"},
        {"name": "compute_bound_ratio", "target": "<= 2x", "value": None, "status": "unknown", "detail": "t"},
    ]
    rep["headline"] = (
        "student int8 TFLite: 91.0% vs teacher 93.0% (\u22122.0 pts), 12x faster, 46x smaller, 38 MB less memory"
    )
    return rep


def write_synthetic_run(root: Path, with_bench: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.json").write_text(json.dumps(synthetic_report(with_bench), indent=2))
    for kind, accs in (("student", [0.5, 0.7, 0.85]), ("baseline", [0.45, 0.6, 0.8])):
        (root / kind).mkdir(exist_ok=True)
        hist = [
            {"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_accuracy": a, "val_accuracy": a - 0.02}
            for i, a in enumerate(accs)
        ]
        (root / kind / "history.json").write_text(json.dumps({"history": hist}))
    return root


# ----------------------------------------------------------------------------------------
# a real (tiny) run directory: data split, teacher, student, baseline, evaluate, exports


def make_fake_run(root: Path) -> Path:
    """Images -> data stage -> random-init teacher/student/baseline -> evaluate stage -> an export manifest
    and model.json as the export stage writes them (edgekd.export.manifest, edgekd.export.metadata).

    Teacher mobilenet_v3_small x1.0 and student x0.25 at 32 px, untrained; exports: the student as
    ONNX fp32 (ok), onnx-int8 (failed at export), coreml (ok, needs macOS to run)."""
    from PIL import Image

    from edgekd.export.formats import FORMATS
    from edgekd.export.manifest import MANIFEST_SCHEMA, write_manifest, write_model_json
    from edgekd.export.metadata import model_json
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.data import prepare_data
    from edgekd.pipeline.models import build_student, build_teacher, count_params, save_state_dict
    from edgekd.pipeline.rundir import RunDir, atomic_write_json, sha256_file
    from edgekd.pipeline.stages import load_student, stage_evaluate

    img_root = root / "images"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(CLASSES):
        (img_root / cls).mkdir(parents=True)
        for i in range(6):
            arr = np.clip(rng.normal(60 * c, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(img_root / cls / f"{i}.png")
    cfg = load_config(
        None,
        "quick",
        {
            "data": {"source": str(img_root), "image_size": SIZE, "test_fraction": 0.34, "val_fraction": 0.0},
            "teacher": {"arch": "mobilenet_v3_small", "weights": None},
            "student": {"width_mult": 0.25},
            "train": {"epochs": 2, "threads": 1},
            "bench": {"min_queries": 5, "min_seconds": 0.0, "warmup": 1},
        },
    )
    run = RunDir(root / "run")
    run.root.mkdir(parents=True)
    run.save_config(cfg)
    data = prepare_data(cfg.data, run)
    import torch

    torch.manual_seed(0)
    teacher, _ = build_teacher("mobilenet_v3_small", None, len(CLASSES), SIZE)
    save_state_dict(teacher.eval(), run.teacher_weights)
    atomic_write_json(
        run.teacher_meta,
        {
            "kind": "torch",
            "arch": "mobilenet_v3_small",
            "params": count_params(teacher),
            "sha256": sha256_file(run.teacher_weights),
            "fine_tuned": False,
        },
    )
    for seed, kind in ((1, "student"), (2, "baseline")):
        torch.manual_seed(seed)
        m = build_student(cfg.student.arch, len(CLASSES), cfg.student.width_mult).eval()
        save_state_dict(m, run.student_dir(kind) / "model.safetensors")
        atomic_write_json(
            run.student_dir(kind) / "meta.json",
            {
                "kind": kind,
                "arch": cfg.student.arch,
                "width_mult": cfg.student.width_mult,
                "params": count_params(m),
                "best_epoch": 1,
                "best_val_accuracy": None,
            },
        )
        atomic_write_json(
            run.student_dir(kind) / "history.json",
            {
                "history": [
                    {"epoch": 1, "train_loss": 1.3, "train_accuracy": 0.3, "val_accuracy": None},
                    {"epoch": 2, "train_loss": 1.1, "train_accuracy": 0.4, "val_accuracy": None},
                ]
            },
        )
    stage_evaluate(cfg, run, data)
    # exports per the export contract
    student = load_student(cfg, run, len(CLASSES), "student")
    onnx = export_onnx(student, run.path("exports", "onnx", "model.onnx"))
    meta = model_json(
        spec=FORMATS["onnx"],
        arch=cfg.student.arch,
        labels=CLASSES,
        height=SIZE,
        width=SIZE,
        mean=cfg.data.mean,
        std=cfg.data.std,
        source_sha256=sha256_file(run.student_dir("student") / "model.safetensors"),
    )
    write_model_json(onnx.parent / "model.json", {**meta, "sha256": sha256_file(onnx)})
    pkg = run.path("exports", "coreml", "model.mlpackage")
    pkg.mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    arts = [
        {
            "name": "onnx",
            "format": "onnx",
            "precision": "fp32",
            "path": "exports/onnx/model.onnx",
            "sha256": sha256_file(onnx),
            "size_bytes": onnx.stat().st_size,
            "status": "ok",
            "reason": None,
            "parity": {"status": "passed", "max_abs_diff": 2e-6, "top1_agreement": 1.0},
        },
        {
            "name": "onnx-int8",
            "format": "onnx",
            "precision": "int8",
            "path": "exports/onnx-int8/model.onnx",
            "sha256": None,
            "size_bytes": None,
            "status": "failed",
            "reason": "quantizer crashed (test)",
            "parity": None,
        },
        {
            "name": "coreml",
            "format": "coreml",
            "precision": "fp16",
            "path": "exports/coreml/model.mlpackage",
            "sha256": "00" * 32,
            "size_bytes": 2,
            "status": "ok",
            "reason": None,
            "parity": {"status": "needs macOS"},
        },
    ]
    write_manifest(run.root, {"schema": MANIFEST_SCHEMA, "artifacts": arts})
    return run.root
