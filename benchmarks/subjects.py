"""What the bench stage measures, and what it feeds them.

Subjects: the teacher in PyTorch and as ONNX fp32 in onnxruntime (exported here to
RUN_DIR/bench/teacher.onnx so the student/teacher speed-up is on one runtime), the PyTorch student
(reference) and every artifact of RUN_DIR/exports/manifest.json (manifest and model.json read through
edgekd.export.manifest; the runtime from the format table, edgekd.export.formats). A subject is a
measurement entry (the report.json fields, still empty) plus a runner `spec` for the worker when it
can be measured here.

Inputs: the first n test images, preprocessed as each artifact's model.json says; reference
logits from the evaluate stage (RUN_DIR/eval/logits.npz).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgekd.benchmarks.machine import count_macs
from edgekd.export.formats import FORMATS, FormatSpec
from edgekd.export.manifest import artifacts, manifest_path, read_manifest, read_model_json
from edgekd.export.runtimes import can_run
from edgekd.pipeline.config import teacher_size
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.progress import log
from edgekd.pipeline.rundir import RunDir, atomic_path, atomic_write_json, read_json, sha256_file

TEACHER_ONNX_OPSET = 17
ONNX_FP32 = FORMATS["onnx"]  # the teacher's ONNX form: the student's ONNX fp32 artifact runs beside it


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (a .mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def rel_path(run: RunDir, p: Path) -> str:
    """`p` relative to the run directory when it is inside it."""
    try:
        return str(Path(p).resolve().relative_to(run.root.resolve()))
    except ValueError:
        return str(p)


# ----------------------------------------------------------------------------------------
# inputs and reference logits


def load_eval_logits(run: RunDir, test_keys: list[str]) -> dict[str, np.ndarray]:
    p = run.path("eval", "logits.npz")
    if not p.exists():
        raise EdgekdError(f"{p} is missing: run the evaluate stage first (edgekd evaluate {run.root})")
    with np.load(p) as z:
        ev = {k: z[k] for k in z.files}
    if [str(k) for k in ev["keys"]] != list(test_keys):
        raise EdgekdError(f"{p} does not match the test split (data changed?); rerun: edgekd evaluate {run.root}")
    return ev


def inputs_for(run: RunDir, cfg, data, n: int, meta_input: Optional[dict], cache: dict, bdir: Path) -> Path:
    """A .npy of the first n test images preprocessed as the artifact's model.json says (default: the run's)."""
    size = cfg.data.image_size
    h = int((meta_input or {}).get("height") or size)
    w = int((meta_input or {}).get("width") or size)
    mean = tuple(float(v) for v in ((meta_input or {}).get("mean") or cfg.data.mean))
    std = tuple(float(v) for v in ((meta_input or {}).get("std") or cfg.data.std))
    from edgekd.pipeline import preprocess

    scale = float((meta_input or {}).get("scale") or preprocess.SCALE)
    key = (h, w, mean, std, round(scale, 9))
    if key in cache:
        return cache[key]
    path = bdir / f".inputs-{len(cache)}.npy"
    if h == w and abs(scale - preprocess.SCALE) < 1e-12:
        # the contract's images, normalised by the artifact's mean/std and written to the .npy a batch at a time (no
        # float copy of the split in memory): from the test split's store (data.cache) at the run's size, else the
        # n files decoded at the artifact's size
        from edgekd.pipeline.imagestore import Normalised, file_images
        from edgekd.pipeline.stages import eval_images

        if h == size:
            x = Normalised(eval_images(run, data, cfg, "test").store, mean, std)
        else:
            x = file_images(data.subset("test")[:n], h, mean, std)
        x.array(n, path=path)
    else:  # a non-square input or another scale: the contract's steps for these n images, a chunk at a time
        import torch

        items = data.subset("test")[:n]
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(items), 3, h, w))
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        for i in range(0, len(items), 128):
            raw = torch.cat([preprocess.resize_rgb(preprocess.load_rgb(it.path), h, w) for it in items[i : i + 128]])
            x[i : i + len(raw)] = ((raw * scale - m) / s).numpy()
        x.flush()
        del x
    cache[key] = path
    return path


# ----------------------------------------------------------------------------------------
# the teacher as ONNX fp32, and MAC counts


def _export_friendly_swish(model) -> None:
    """efficientnet-pytorch ports use an autograd-Function swish the ONNX exporter cannot trace; swap in the
    plain one. Not `model.set_swish(False)`: in efficientnet-lite-pytorch that also replaces ReLU6 with swish
    (a different network; found by this stage's parity check)."""
    for mod in model.modules():
        act = getattr(mod, "_swish", None)
        if act is not None and type(act).__name__ == "MemoryEfficientSwish":
            swish = getattr(__import__(type(act).__module__, fromlist=["Swish"]), "Swish", None)
            if swish is not None:
                mod._swish = swish()


def export_teacher_onnx(cfg, run: RunDir, num_classes: int, bdir: Path) -> tuple[Path, dict]:
    """RUN_DIR/bench/teacher.onnx (torch.onnx.export, TorchScript exporter), cached by teacher hash."""
    import torch

    from edgekd.pipeline.stages import load_teacher

    tmeta = read_json(run.teacher_meta)
    out, info_p = bdir / "teacher.onnx", bdir / "teacher.onnx.json"
    size = teacher_size(cfg)
    want = {
        "teacher_sha256": tmeta["sha256"],
        "image_size": size,
        "opset": TEACHER_ONNX_OPSET,
        "exporter": 2,
        "torch": torch.__version__,
    }
    if out.exists() and info_p.exists():
        info = read_json(info_p)
        if all(info.get(k) == v for k, v in want.items()):
            return out, info
    model = load_teacher(cfg, run, num_classes)
    _export_friendly_swish(model)
    t0 = time.time()
    try:
        with warnings.catch_warnings(), atomic_path(out) as tmp:
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, size, size),),
                str(tmp),
                dynamo=False,
                opset_version=TEACHER_ONNX_OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as e:
        raise EdgekdError(
            f"could not export the teacher to ONNX for benchmarking: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        ) from None
    info = {**want, "sha256": sha256_file(out), "export_seconds": round(time.time() - t0, 2)}
    atomic_write_json(info_p, info)
    log(f"bench: exported the teacher to {out} ({size_of(out) / 1e6:.1f} MB) in {info['export_seconds']}s")
    return out, info


def model_macs(cfg, run: RunDir, num_classes: int, bdir: Path) -> dict[str, Optional[int]]:
    """Batch-1 MACs of teacher and student (Conv2d + Linear forward hooks), cached in bench/macs.json."""
    import torch

    from edgekd.pipeline.models import OnnxTeacher
    from edgekd.pipeline.stages import load_student, load_teacher

    tsha = read_json(run.teacher_meta)["sha256"]
    ssha = sha256_file(run.student_dir("student") / "model.safetensors")
    key = {
        "teacher_sha256": tsha,
        "student_sha256": ssha,
        "image_size": cfg.data.image_size,
        "teacher_size": teacher_size(cfg),
    }
    p = bdir / "macs.json"
    if p.exists():
        old = read_json(p)
        if old.get("key") == key:
            return old["macs"]
    size = cfg.data.image_size
    macs: dict[str, Optional[int]] = {}
    with torch.inference_mode():
        teacher = load_teacher(cfg, run, num_classes)
        macs["teacher"] = None if isinstance(teacher, OnnxTeacher) else count_macs(teacher, teacher_size(cfg))
        del teacher
        macs["student"] = count_macs(load_student(cfg, run, num_classes, "student"), size)
    atomic_write_json(p, {"key": key, "macs": macs})
    return macs


# ----------------------------------------------------------------------------------------
# subjects


def blank_entry(**kw: Any) -> dict:
    """A measurement entry with every report.json field (benchmarks/SCHEMA.md), updated with `kw`."""
    e = {
        "name": "",
        "model": "student",
        "format": "",
        "precision": None,
        "runtime": None,
        "runtime_version": None,
        "path": None,
        "sha256": None,
        "size_bytes": None,
        "status": "ok",
        "reason": None,
        "profile": None,
        "threads": None,
        "threads_requested": None,
        "cpus": None,
        "pinned": None,
        "accuracy": None,
        "agreement_teacher": None,
        "agreement_student": None,
        "accuracy_images": None,
        "max_abs_logit_diff_vs_pytorch": None,
        "latency_ms": None,
        "throughput_ips": None,
        "queries": None,
        "timed_seconds": None,
        "early_stop": None,
        "peak_rss_mb": None,
        "baseline_rss_mb": None,
        "import_ms": None,
        "load_ms": None,
        "first_inference_ms": None,
        "macs": None,
        "compute_bound_ms": None,
        "parity_status": None,
        "parity": None,
        "bench_json": None,
    }
    e.update(kw)
    return e


def collect_subjects(cfg, run: RunDir, num_classes: int, bdir: Path) -> list[dict]:
    """Teacher (PyTorch, ONNX), PyTorch student and the manifest's artifacts, as entries with a 'spec'."""
    tmeta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
    size, tsize = cfg.data.image_size, teacher_size(cfg)
    subjects: list[dict] = []
    teacher_onnx = {
        "name": "teacher-onnx",
        "model": "teacher",
        "format": ONNX_FP32.format,
        "precision": ONNX_FP32.precision,
        "runtime": ONNX_FP32.runtime,
        # a teacher.image_size teacher is measured on its own input size (accuracy and latency)
        "model_input": {"height": tsize, "width": tsize},
    }
    if tmeta.get("kind") == "onnx":
        subjects.append(
            blank_entry(
                name="teacher-pytorch",
                model="teacher",
                format="pytorch",
                precision="fp32",
                runtime="pytorch",
                status="skipped",
                reason="the teacher is an ONNX file; there is no PyTorch model to run",
            )
        )
        tpath = Path(tmeta["path"])
        subjects.append(
            blank_entry(
                **teacher_onnx,
                path=str(tpath),
                sha256=tmeta.get("sha256"),
                size_bytes=size_of(tpath),
                spec={"kind": "onnx", "path": str(tpath)},
            )
        )
    else:
        w = run.teacher_weights
        subjects.append(
            blank_entry(
                name="teacher-pytorch",
                model="teacher",
                format="pytorch",
                precision="fp32",
                runtime="pytorch",
                path=rel_path(run, w),
                sha256=tmeta.get("sha256"),
                size_bytes=size_of(w),
                model_input={"height": tsize, "width": tsize},
                spec={
                    "kind": "torch",
                    "path": str(w),
                    "builder": "teacher",
                    "arch": tmeta["arch"],
                    "num_classes": num_classes,
                    "image_size": tsize,
                    "channels_last": bool(cfg.train.channels_last),
                },
            )
        )
        try:
            tpath, tinfo = export_teacher_onnx(cfg, run, num_classes, bdir)
            subjects.append(
                blank_entry(
                    **teacher_onnx,
                    path=rel_path(run, tpath),
                    sha256=tinfo["sha256"],
                    size_bytes=size_of(tpath),
                    spec={"kind": "onnx", "path": str(tpath)},
                )
            )
        except EdgekdError as e:
            subjects.append(blank_entry(**teacher_onnx, status="failed", reason=str(e)))
    sw = run.require(run.student_dir("student") / "model.safetensors", "run the distill stage first")
    subjects.append(
        blank_entry(
            name="student-pytorch",
            model="student",
            format="pytorch",
            precision="fp32",
            runtime="pytorch",
            path=rel_path(run, sw),
            sha256=sha256_file(sw),
            size_bytes=size_of(sw),
            spec={
                "kind": "torch",
                "path": str(sw),
                "builder": "student",
                "arch": cfg.student.arch,
                "width_mult": cfg.student.width_mult,
                "num_classes": num_classes,
                "image_size": size,
                "channels_last": bool(cfg.train.channels_last),
            },
            reference=True,
        )
    )
    subjects += artifact_subjects(run)
    return subjects


def format_spec(artifact: dict) -> Optional[FormatSpec]:
    """The format-table row of a manifest artifact: by its name, else the first row of its container format."""
    fmt = artifact.get("format")
    spec = FORMATS.get(str(artifact.get("name")))
    if spec is not None and spec.format == fmt:
        return spec
    return next((s for s in FORMATS.values() if s.format == fmt), None)


def artifact_subjects(run: RunDir) -> list[dict]:
    """One subject per artifact of exports/manifest.json (none without a manifest); only status "ok" ones
    whose file is there, unchanged, and runnable on this machine get a runner spec."""
    if not manifest_path(run.root).exists():
        return []
    out = []
    for a in artifacts(read_manifest(run.root)):
        name = str(a.get("name") or a.get("path") or "artifact")
        fmt = str(a.get("format") or "")
        row = format_spec(a)
        parity = a.get("parity") if isinstance(a.get("parity"), dict) else None
        e = blank_entry(
            name=name,
            model="student",
            format=fmt,
            precision=a.get("precision"),
            runtime=row.runtime if row else fmt,
            path=a.get("path"),
            sha256=a.get("sha256"),
            size_bytes=a.get("size_bytes"),
            parity=parity,
            parity_status=(parity or {}).get("status"),
        )
        status = a.get("status", "ok")
        legacy = (parity or {}).get("status") == "needs macOS"  # manifests before `unverified` existed
        if status in ("unverified", "weights_checked") or legacy:  # CoreML off macOS: not run, nothing measured
            e.update(
                status="unverified",
                reason=f"export status {'unverified' if legacy else status}: "
                + str((parity or {}).get("note") or "its runtime cannot run here; nothing was measured"),
            )
            out.append(e)
            continue
        if status != "ok":
            e.update(
                status="skipped" if status == "skipped" else "failed",
                reason=a.get("reason") or f"export status {status}",
            )
            out.append(e)
            continue
        p = run.root / str(a.get("path") or "")
        if not a.get("path") or not p.exists():
            e.update(status="failed", reason=f"artifact file missing: {p}")
            out.append(e)
            continue
        e["size_bytes"] = size_of(p)
        if p.is_file():
            actual = sha256_file(p)
            if a.get("sha256") and actual != a["sha256"]:
                e.update(
                    status="failed",
                    reason="sha256 differs from the manifest: the file changed after export",
                    sha256=actual,
                )
                out.append(e)
                continue
            e["sha256"] = actual
        mj = p.parent / "model.json"
        try:
            inp = (read_model_json(mj).get("input") or {}) if mj.exists() else {}
        except EdgekdError as err:
            e.update(status="failed", reason=str(err))
            out.append(e)
            continue
        e["model_input"] = inp
        why = can_run(fmt) if row else f"unknown format {fmt!r}"
        if why:
            e.update(status="skipped", reason=why)
        else:
            e["spec"] = {"kind": fmt, "path": str(p), "layout": inp.get("layout")}
        out.append(e)
    return out
