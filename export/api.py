"""The export stage: the distilled student -> deployable files under RUN_DIR/exports/.

    exports/<name>/model.<ext>   the artifact (model.onnx, model.tflite, model.mlpackage)
    exports/<name>/model.json    schema edgekd.model/1 (what the Android app reads)
    exports/<name>/labels.txt    one class label per line
    exports/manifest.json        every artifact: format, precision, path, sha256, size, status, parity

Per artifact: convert into a temporary folder, embed metadata, check that the file really has the
precision it is labelled with, run it in its own runtime on the test images (same preprocessing as the
PyTorch student) and gate the figures, then publish the folder with renames. A conversion error leaves no
file behind and a one-line reason in the manifest; a missed parity gate keeps the file, marks it failed,
and `run_export` raises GateFailed (CLI exit 3) after the manifest is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.export import converters
from edgekd.export import metadata as md
from edgekd.export.context import (
    OPTION_DEFAULTS,
    OPTION_KEYS,
    Captured,
    ExportContext,
    calibration_images,
    captured_output,
    export_options,
    first_line,
)
from edgekd.export.formats import DEFAULT_GATES, FORMATS, FormatSpec, check_gate_keys, gate_for, resolve_formats
from edgekd.export.manifest import MANIFEST_SCHEMA, manifest_path, read_manifest, write_manifest, write_model_json
from edgekd.export.parity import (
    apply_gate,
    check_precision,
    class_recall_gate,
    inspect_artifact,
    parity_metrics,
    validate_coreml,
)
from edgekd.export.runtimes import Unsupported, load_runner
from edgekd.pipeline import __version__
from edgekd.pipeline.errors import EdgekdError, GateFailed
from edgekd.pipeline.progress import log
from edgekd.pipeline.rundir import RunDir, atomic_write_bytes, fingerprint, sha256_file

# What the command line needs (edgekd export): run_export, and the table and checks it validates with.
__all__ = [
    "run_export",
    "resolve_formats",
    "check_gate_keys",
    "FORMATS",
    "DEFAULT_GATES",
    "export_one",
    "export_options",
    "OPTION_KEYS",
    "OPTION_DEFAULTS",
    "tree_sha256",
    "tree_size",
    "int8_method",
]


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder (.mlpackage) as sha256 over its sorted (relative path, file hash)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def tree_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _threads(cfg, opts: dict) -> int:
    if opts.get("parity_threads"):
        return int(opts["parity_threads"])
    return int(cfg.train.threads or min(4, os.cpu_count() or 1))


def _publish(tmpdir: Path, final: Path) -> None:
    """Replace `final` by `tmpdir` with renames (each atomic); the old folder is removed afterwards."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmpdir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _blank_entry(spec: FormatSpec) -> dict:
    return {
        "name": spec.name,
        "format": spec.format,
        "precision": spec.precision,
        "path": None,
        "sha256": None,
        "size_bytes": None,
        "status": "failed",
        "reason": None,
        "parity": None,
        "layout": spec.layout,
        "converter": None,
        "runtime": spec.runtime,
    }


def _missing_reason(spec: FormatSpec, missing: list[str]) -> str:
    extra = "coreml" if spec.format == "coreml" else "tflite" if spec.format == "tflite" else None
    hint = f"pip install 'edgekd[{extra}]'" if extra else f"pip install {' '.join(missing)}"
    return f"converter not available: {', '.join(missing)} not importable ({hint})"


def export_one(
    ctx,
    spec: FormatSpec,
    *,
    exports_dir: Path,
    run_root: Path,
    x: np.ndarray,
    ref: np.ndarray,
    y: Optional[np.ndarray],
    gate: dict,
) -> dict:
    """Convert, inspect, parity-check and publish one artifact; returns its manifest entry (never raises
    for converter problems: they become status 'failed' with a reason)."""
    entry = _blank_entry(spec)
    final = exports_dir / spec.name
    missing = spec.missing_modules()
    if missing:
        entry.update(status="skipped", reason=_missing_reason(spec, missing))
        shutil.rmtree(final, ignore_errors=True)  # an older file would contradict the manifest
        log(f"export: {spec.name} skipped: {entry['reason']}")
        return entry
    tmpdir = exports_dir / f".{spec.name}.tmp-{os.getpid()}"
    if tmpdir.exists():
        shutil.rmtree(tmpdir)
    tmpdir.mkdir(parents=True)
    t0 = time.time()
    try:
        meta = md.model_json(
            spec=spec,
            arch=ctx.arch,
            labels=ctx.labels,
            height=ctx.size,
            width=ctx.size,
            mean=ctx.mean,
            std=ctx.std,
            source_sha256=ctx.source_sha256,
        )
        out = tmpdir / spec.filename
        cap = Captured()
        # candidates (export/candidates.py) are checked by the same parity code and gate as the artifact
        ctx.parity_check = lambda content: candidate_parity(content, spec, tmpdir, ctx.threads, x, ref, y, gate)
        try:
            with captured_output() as cap:
                info = converters.CONVERTERS[spec.converter](ctx, spec, out, meta)
        except Exception:
            entry["converter_output_tail"] = cap.tail() or None
            raise
        if not out.exists():
            raise EdgekdError(f"the converter wrote no {spec.filename}")
        inside = inspect_artifact(out)
        allowed = int((info.get("quantization") or {}).get("allowed_float_compute_ops", 0))
        why = check_precision(spec, inside, allowed)
        if why:
            raise EdgekdError(f"refusing to label this file {spec.precision}: {why}")
        if md.read_embedded(out).get("labels") != list(ctx.labels):
            raise EdgekdError("embedded metadata does not round-trip")
        entry["converter"] = info.get("converter")
        entry["details"] = {k: v for k, v in info.items() if k != "converter"}
        entry["inspect"] = inside
        entry["convert_seconds"] = round(time.time() - t0, 2)
        # parity, in the artifact's own runtime
        t1 = time.time()
        try:
            with captured_output():
                runner = load_runner(out, ctx.threads)
            got = runner(x)
            par = parity_metrics(ref, got, y)
            status, reasons = apply_gate(par, gate)
            par.update(gate=gate, status=status, runtime=spec.runtime)
            if reasons:
                par["failed"] = reasons
        except Unsupported as e:  # Core ML off macOS: spec checks, then the file's program read back and interpreted
            problems = validate_coreml(inside, meta)
            if problems:
                raise EdgekdError(f"CoreML spec check failed: {'; '.join(problems)}") from None
            par = offline_coreml_parity(out, x, ref, y, gate, str(e))
            par.update(gate=gate, runtime=spec.runtime, spec_check="passed", spec_problems=[])
        par["seconds"] = round(time.time() - t1, 2)
        entry["parity"] = par
        # sidecars, then publish the folder
        sha = tree_sha256(out)
        meta["sha256"] = sha
        meta["quantization"] = info.get("quantization")
        write_model_json(tmpdir / "model.json", meta)
        atomic_write_bytes(tmpdir / "labels.txt", ("\n".join(ctx.labels) + "\n").encode())
        _publish(tmpdir, final)
        published = final / spec.filename
        entry.update(
            path=published.relative_to(run_root).as_posix(),
            sha256=sha,
            size_bytes=tree_size(published),
            status=ENTRY_STATUS.get(par["status"], "failed"),
        )
        if entry["status"] == "failed":
            entry["reason"] = f"parity gate missed: {'; '.join(par.get('failed', []))}"
        _log_entry(entry)
        return entry
    except ImportError as e:  # a converter present but not importable (broken install): skipped, not a crash
        shutil.rmtree(tmpdir, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        entry.update(
            status="skipped",
            reason=f"converter not available: {type(e).__name__}: {first_line(e, 400)}",
            path=None,
            sha256=None,
            size_bytes=None,
            parity=None,
        )
        log(f"export: {spec.name} skipped: {entry['reason']}")
        return entry
    except Exception as e:  # a converter problem: no file left behind, a clear reason in the manifest
        short = first_line(e, 400)
        entry.update(
            status="failed",
            reason=f"{type(e).__name__}: {short}" if not isinstance(e, EdgekdError) else short,
            path=None,
            sha256=None,
            size_bytes=None,
        )
        entry["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        shutil.rmtree(tmpdir, ignore_errors=True)
        if final.exists():  # a stale artifact from an earlier export would contradict the manifest
            shutil.rmtree(final, ignore_errors=True)
        log(f"export: {spec.name} FAILED: {entry['reason']}")
        return entry
    finally:
        ctx.parity_check = None
        if tmpdir.exists():
            shutil.rmtree(tmpdir, ignore_errors=True)


def candidate_parity(content: bytes, spec: FormatSpec, tmpdir: Path, threads: int, x, ref, y, gate: dict) -> dict:
    """Parity of a candidate file (bytes) in the artifact's runtime on the test images, held to its gate."""
    path = tmpdir / f".candidate{spec.suffix}"
    path.write_bytes(content)
    try:
        got = load_runner(path, threads)(x)
    finally:
        path.unlink(missing_ok=True)
    par = parity_metrics(ref, got, y)
    status, reasons = apply_gate(par, gate)
    par.update(status=status, on="test images")
    if reasons:
        par["failed"] = reasons
    return par


# parity status -> manifest status. Only a file whose own runtime reproduced the student is "ok"; a CoreML file
# off macOS is at best "weights_checked" (its program and weights, read back and interpreted, match the student)
# or "unverified" (not even that could run). Goals, the headline and the Android installer use "ok" only.
ENTRY_STATUS = {"passed": "ok", "weights_checked": "weights_checked", "unverified": "unverified"}


def offline_coreml_parity(out: Path, x: np.ndarray, ref: np.ndarray, y, gate: dict, why: str) -> dict:
    """Parity of a CoreML file that cannot be run here (export/coreml_check.py): status weights_checked when
    the reference interpretation of its program meets the gate, failed when it does not, unverified when the
    program could not be interpreted."""
    from edgekd.export.coreml_check import UncheckedOp, interpret, load_program, weight_summary

    base = {"runtime_note": why, "checked_by": "edgekd MIL reference interpreter (coremltools milproto loader)"}
    try:
        fn_input = load_program(out)
        got = interpret(out, x, fn_input)
    except UncheckedOp as e:
        return {
            **base,
            "status": "unverified",
            "note": f"{e}; the file's numbers were not checked",
            **{k: None for k in ("max_abs", "mean_abs", "cosine", "agreement", "accuracy", "accuracy_drop_points")},
        }
    par = parity_metrics(ref, got, y)
    status, reasons = apply_gate(par, gate)
    par.update(base, weights=weight_summary(fn_input[0]))
    par["status"] = "weights_checked" if status == "passed" else "failed"
    par["note"] = (
        "Core ML itself was not run (needs macOS): the file's weights and program were read back and interpreted "
        "with PyTorch kernels (fp16 rounding per op); Apple's kernels are unverified"
    )
    if reasons:
        par["failed"] = reasons
    return par


def _log_entry(e: dict) -> None:
    p = e.get("parity") or {}
    size = f"{e['size_bytes'] / 1e6:.2f} MB" if e.get("size_bytes") else "?"
    if p.get("status") == "unverified":
        log(f"export: {e['name']}: {size}, spec checked, numbers UNVERIFIED ({p.get('note')})")
        return
    if p.get("status") == "weights_checked":
        log(
            f"export: {e['name']}: {size}, weights_checked (program read back and interpreted: agreement "
            f"{p['agreement'] * 100:.2f}%); Core ML prediction needs macOS, so its runtime is unverified"
        )
        return
    acc = f", accuracy {p['accuracy'] * 100:.1f}%" if p.get("accuracy") is not None else ""
    log(
        f"export: {e['name']}: {size}, agreement {p.get('agreement', 0) * 100:.2f}%, max|d| {p.get('max_abs', 0):.2e}"
        f"{acc} -> {p.get('status')}"
    )


def int8_method(entry: dict) -> Optional[str]:
    """One line on how an int8 artifact was made (QAT, layers kept float), for people."""
    q = (entry.get("details") or {}).get("quantization")
    if entry.get("precision") != "int8" or not isinstance(q, dict) or "kept_float" not in q:
        return None
    qat = q.get("qat") or {}
    parts = []
    if qat.get("used"):
        parts.append(
            f"QAT fine-tuning {qat.get('epochs')} epochs on {qat.get('images')} images "
            f"(kept epoch {qat.get('kept_epoch')})"
        )
    else:
        parts.append(
            "post-training quantization only"
            + (
                f" (all-int8 calibration agreement {qat['ptq_calibration_agreement']:.1%})"
                if qat.get("ptq_calibration_agreement") is not None
                else ""
            )
        )
    kept = q.get("kept_float")
    n = len(kept) if isinstance(kept, list) else 0
    parts.append(f"{n} layer{'s' if n != 1 else ''} kept float" if n else "every layer int8")
    return "; ".join(parts)


def _summary(manifest: dict) -> dict:
    rows = []
    for a in manifest["artifacts"]:
        p = a.get("parity") or {}
        rows.append(
            {k: a.get(k) for k in ("name", "format", "precision", "path", "size_bytes", "status", "reason")}
            | {
                "agreement": p.get("agreement"),
                "accuracy": p.get("accuracy"),
                "accuracy_drop_points": p.get("accuracy_drop_points"),
                "max_abs": p.get("max_abs"),
                "parity_status": p.get("status"),
                "int8_method": int8_method(a),
            }
        )
    return {
        "manifest": "exports/manifest.json",
        "artifacts": rows,
        "source_checkpoint_sha256": manifest.get("source_checkpoint_sha256"),
        "parity_images": manifest.get("parity_images"),
        "calibration_images": manifest.get("calibration_images"),
    }


def _merge_previous(run_root: Path, current: list[dict], source_sha: str) -> list[dict]:
    """Keep earlier entries of formats not exported this time, if they belong to the same checkpoint and
    their files are unchanged; table order."""
    done = {e["name"] for e in current}
    keep = []
    if manifest_path(run_root).exists():
        try:
            old = read_manifest(run_root)
        except EdgekdError:  # a corrupt manifest is replaced, not merged
            old = {}
        if old.get("source_checkpoint_sha256") == source_sha:
            for e in old.get("artifacts", []):
                if e.get("name") in done or e.get("name") not in FORMATS:
                    continue
                p = run_root / e["path"] if e.get("path") else None
                if e.get("status") == "skipped" or (p is not None and p.exists() and tree_sha256(p) == e.get("sha256")):
                    keep.append(e)
    by = {e["name"]: e for e in keep + current}
    return [by[n] for n in FORMATS if n in by]


def export_fingerprint(cfg, source_sha: str, data_fp: str, specs: list[FormatSpec]) -> str:
    """What an export depends on: the student's weights (sha256), the export section and the preprocessing
    of the config, the data split, the formats, the converters' and runtimes' versions and edgekd's own
    export code. The same fingerprint means the same files: `edgekd run` then skips the stage."""
    import edgekd.export as pkg

    code = sorted(Path(pkg.__file__).parent.glob("*.py"))
    return fingerprint(
        "export",
        source_sha,
        cfg.export.model_dump(mode="json"),
        cfg.gate.max_class_recall_drop,  # part of each artifact's parity gate
        cfg.data.image_size,
        list(cfg.data.mean),
        list(cfg.data.std),
        data_fp,
        [s.name for s in specs],
        {k: v for k, v in _runtime_versions().items() if k != "tflite-runtime"},
        hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in code)).hexdigest()[:16],
        __version__,
    )


def _up_to_date(run: RunDir, fp: str) -> Optional[dict]:
    """The manifest, when the export stage ran with fingerprint `fp` and every file it lists is unchanged."""
    if not run.stage_done("export", fp) or not manifest_path(run.root).exists():
        return None
    try:
        manifest = read_manifest(run.root)
    except EdgekdError:
        return None
    for e in manifest["artifacts"]:
        if e.get("path"):
            p = run.root / e["path"]
            if not p.exists() or tree_sha256(p) != e.get("sha256"):
                return None
    return manifest


def _raise_failed(run: RunDir, entries: list[dict]) -> None:
    failed = [e for e in entries if e.get("status") == "failed"]
    if failed:
        msgs = []
        for e in failed:
            p = e.get("parity") or {}
            if p.get("failed"):
                msgs.append(f"{e['name']} parity gate missed ({'; '.join(p['failed'])})")
            else:
                msgs.append(f"{e['name']} export failed ({e.get('reason')})")
        raise GateFailed(f"export: {'; '.join(msgs)}; manifest: {manifest_path(run.root)}")


def run_export(run: RunDir, cfg, formats: Optional[list[str]] = None, force: bool = False) -> dict:
    """Export the distilled student in `formats` (default cfg.export.formats); returns the manifest. Skipped
    (the manifest as it is) when nothing it depends on changed (export_fingerprint), unless `force`."""
    import torch

    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.report import update_report
    from edgekd.pipeline.stages import eval_images, load_student

    t_start = time.time()
    specs = resolve_formats(formats if formats is not None else cfg.export.formats)
    check_gate_keys(cfg.export.gates)
    opts = export_options(cfg)
    data = load_split(run)
    labels = list(data.classes)
    weights = run.require(
        run.student_dir("student") / "model.safetensors", f"run the distill stage first (edgekd distill {run.root})"
    )
    source_sha = sha256_file(weights)
    fp = export_fingerprint(cfg, source_sha, data.fingerprint, specs)
    done = None if force else _up_to_date(run, fp)
    if done is not None:
        log("export: up to date, skipped")
        _raise_failed(run, [e for e in done["artifacts"] if e.get("name") in {s.name for s in specs}])
        return done
    model = load_student(cfg, run, len(labels))
    threads = _threads(cfg, opts)

    exports_dir = run.path("exports")
    exports_dir.mkdir(parents=True, exist_ok=True)
    work = exports_dir / f".work-{os.getpid()}"
    # parity images: the first export.parity_images (default all) test images through the preprocessing contract,
    # read from the test split's store (data.cache) a batch at a time into a memory-mapped scratch file, so the
    # export holds no float copy of the split in memory; the PyTorch student on them is the reference
    test = eval_images(run, data, cfg, "test")
    if not len(test):
        raise EdgekdError("the test split is empty: nothing to check parity on")
    x = test.array(cfg.export.parity_images, scratch=exports_dir)
    y = data.labels("test")[: len(x)]
    with torch.inference_mode():
        ref = torch.cat([model(torch.from_numpy(x[i : i + 64])) for i in range(0, len(x), 64)]).float().numpy()
    needs_calib = any(s.precision in ("int8", "dynamic-int8") or s.format == "tflite" for s in specs)
    calib = calibration_images(data, cfg, cfg.export.calibration_images if needs_calib else 1)

    ctx = ExportContext.of_config(
        cfg,
        model=model,
        labels=labels,
        calib=calib,
        work=work,
        threads=threads,
        source_sha256=source_sha,
        options=opts,
        train_images=lambda n: calibration_images(data, cfg, n),
    )
    log(
        f"export: {', '.join(s.name for s in specs)} ({len(x)} parity images, {len(calib)} calibration images, "
        f"{threads} threads)"
    )
    entries = []
    try:
        for spec in specs:
            entries.append(
                export_one(
                    ctx,
                    spec,
                    exports_dir=exports_dir,
                    run_root=run.root,
                    x=x,
                    ref=ref,
                    y=y,
                    gate=gate_for(spec, cfg.export.gates) | class_recall_gate(cfg.gate.max_class_recall_drop, labels),
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "artifacts": _merge_previous(run.root, entries, source_sha),
        "source_checkpoint": str(weights.relative_to(run.root)),
        "source_checkpoint_sha256": source_sha,
        "edgekd_version": __version__,
        "arch": cfg.student.arch,
        "labels": labels,
        "input_size": cfg.data.image_size,
        "parity_images": int(len(x)),
        "calibration_images": int(len(calib)) if needs_calib else 0,
        "preprocessing": {
            "resize": "bilinear_half_pixel",
            "mean": list(cfg.data.mean),
            "std": list(cfg.data.std),
            "scale": 1 / 255,
            "color_mode": "RGB",
        },
        "runtimes": _runtime_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - t_start, 1),
    }
    write_manifest(run.root, manifest)
    run.mark_stage("export", fp, time.time() - t_start)
    update_report(run, exports=_summary(manifest))
    _raise_failed(run, entries)
    return manifest


def _runtime_versions() -> dict:
    from importlib import metadata as im

    out = {}
    for dist in (
        "torch",
        "onnx",
        "onnxruntime",
        "tensorflow",
        "onnx2tf",
        "ai-edge-litert",
        "litert-torch",
        "ai-edge-quantizer",
        "coremltools",
    ):
        try:
            out[dist] = im.version(dist)
        except im.PackageNotFoundError:
            out[dist] = None
    out["tflite-runtime"] = "not usable here (2.14 fails with numpy 2 and current op versions); LiteRT interpreter used"
    return out
