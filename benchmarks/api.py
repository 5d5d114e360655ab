"""The bench stage: measure every exported artifact and the teacher like a device would run them.

    run_bench(run, cfg) -> report sections

Subjects: the teacher in PyTorch and as ONNX fp32 in onnxruntime (exported here to
RUN_DIR/bench/teacher.onnx so the student/teacher speed-up is on one runtime), the PyTorch student
(reference) and every artifact of RUN_DIR/exports/manifest.json whose status is "ok". Each is
measured once per thread profile, each time in a fresh subprocess (benchmarks/worker.py); the
accuracy pass runs in the first profile's process only (after its memory reading).

Writes RUN_DIR/bench/<name>@<profile>.json per measurement and <name>.logits.npy, updates
report.json (artifacts, teacher_bench, student_bench, bench_machine, bench_settings, goals,
headline) and renders report.md / report.html (benchmarks/report.py).
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks import machine
from benchmarks.measure import run_worker
from benchmarks.runners import can_run
from pipeline.errors import EdgekdError
from pipeline.progress import log
from pipeline.rundir import RunDir, atomic_path, atomic_write_json, fingerprint, read_json, sha256_file

FORMAT_NAMES = {"onnx": "ONNX", "tflite": "TFLite", "coreml": "Core ML", "pytorch": "PyTorch"}
RUNTIME_NAMES = {"onnxruntime": "onnxruntime", "litert": "LiteRT", "coreml": "Core ML", "pytorch": "PyTorch"}
# The artifact the headline speaks for: the first of these that measured fine and did not fail parity.
HEADLINE_PRIORITY = [("tflite", "int8"), ("tflite", "fp16"), ("tflite", "fp32"), ("onnx", "int8"), ("onnx", "fp32"),
                     ("coreml", "int8"), ("coreml", "fp16"), ("coreml", "fp32")]
TEACHER_ONNX_OPSET = 17


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


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


def _inputs_for(run: RunDir, cfg, data, n: int, meta_input: Optional[dict], cache: dict, bdir: Path) -> Path:
    """A .npy of the first n test images preprocessed as the artifact's model.json says (default: the run's)."""
    size = cfg.data.image_size
    h = int((meta_input or {}).get("height") or size)
    w = int((meta_input or {}).get("width") or size)
    mean = tuple(float(v) for v in ((meta_input or {}).get("mean") or cfg.data.mean))
    std = tuple(float(v) for v in ((meta_input or {}).get("std") or cfg.data.std))
    from pipeline import preprocess

    scale = float((meta_input or {}).get("scale") or preprocess.SCALE)
    key = (h, w, mean, std, round(scale, 9))
    if key in cache:
        return cache[key]
    if (h, w) == (size, size) and mean == tuple(cfg.data.mean) and std == tuple(cfg.data.std) \
            and abs(scale - preprocess.SCALE) < 1e-12:
        from pipeline.stages import eval_tensor

        x = eval_tensor(run, data, cfg, "test")[:n].numpy()
    else:
        import torch

        items = data.subset("test")[:n]
        raw = torch.cat([preprocess.resize_rgb(preprocess.load_rgb(it.path), h, w) for it in items]) if items else \
            torch.zeros((0, 3, h, w))
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        x = ((raw * scale - m) / s).numpy()
    path = bdir / f".inputs-{len(cache)}.npy"
    np.save(path, np.ascontiguousarray(x, dtype=np.float32))
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

    from pipeline.stages import load_teacher

    tmeta = read_json(run.teacher_meta)
    out, info_p = bdir / "teacher.onnx", bdir / "teacher.onnx.json"
    size = cfg.data.image_size
    want = {"teacher_sha256": tmeta["sha256"], "image_size": size, "opset": TEACHER_ONNX_OPSET, "exporter": 2,
            "torch": torch.__version__}
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
            torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(tmp), dynamo=False,
                              opset_version=TEACHER_ONNX_OPSET, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:
        raise EdgekdError(f"could not export the teacher to ONNX for benchmarking: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    info = {**want, "sha256": sha256_file(out), "export_seconds": round(time.time() - t0, 2)}
    atomic_write_json(info_p, info)
    log(f"bench: exported the teacher to {out} ({_size(out) / 1e6:.1f} MB) in {info['export_seconds']}s")
    return out, info


def model_macs(cfg, run: RunDir, num_classes: int, bdir: Path) -> dict[str, Optional[int]]:
    """Batch-1 MACs of teacher and student (Conv2d + Linear forward hooks), cached in bench/macs.json."""
    import torch

    from pipeline.models import OnnxTeacher
    from pipeline.stages import load_student, load_teacher

    tsha = read_json(run.teacher_meta)["sha256"]
    ssha = sha256_file(run.student_dir("student") / "model.safetensors")
    key = {"teacher_sha256": tsha, "student_sha256": ssha, "image_size": cfg.data.image_size}
    p = bdir / "macs.json"
    if p.exists():
        old = read_json(p)
        if old.get("key") == key:
            return old["macs"]
    size = cfg.data.image_size
    macs: dict[str, Optional[int]] = {}
    with torch.inference_mode():
        teacher = load_teacher(cfg, run, num_classes)
        macs["teacher"] = None if isinstance(teacher, OnnxTeacher) else machine.count_macs(teacher, size)
        del teacher
        macs["student"] = machine.count_macs(load_student(cfg, run, num_classes, "student"), size)
    atomic_write_json(p, {"key": key, "macs": macs})
    return macs


# ----------------------------------------------------------------------------------------
# subjects


def _blank(**kw: Any) -> dict:
    e = {"name": "", "model": "student", "format": "", "precision": None, "runtime": None, "runtime_version": None,
         "path": None, "sha256": None, "size_bytes": None, "status": "ok", "reason": None, "profile": None,
         "threads": None, "threads_requested": None, "cpus": None, "pinned": None, "accuracy": None,
         "agreement_teacher": None, "agreement_student": None, "accuracy_images": None,
         "max_abs_logit_diff_vs_pytorch": None, "latency_ms": None, "throughput_ips": None, "queries": None,
         "timed_seconds": None, "early_stop": None, "peak_rss_mb": None, "baseline_rss_mb": None, "import_ms": None,
         "load_ms": None, "first_inference_ms": None, "macs": None, "compute_bound_ms": None, "parity_status": None,
         "parity": None, "bench_json": None}
    e.update(kw)
    return e


def _rel(run: RunDir, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(run.root.resolve()))
    except ValueError:
        return str(p)


def collect_subjects(cfg, run: RunDir, num_classes: int, bdir: Path) -> list[dict]:
    """Teacher (PyTorch, ONNX), PyTorch student and the manifest's artifacts, as entries with a 'spec'."""
    tmeta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
    size = cfg.data.image_size
    subjects: list[dict] = []
    if tmeta.get("kind") == "onnx":
        subjects.append(_blank(name="teacher-pytorch", model="teacher", format="pytorch", precision="fp32",
                               runtime="pytorch", status="skipped",
                               reason="the teacher is an ONNX file; there is no PyTorch model to run"))
        tpath = Path(tmeta["path"])
        subjects.append(_blank(name="teacher-onnx", model="teacher", format="onnx", precision="fp32",
                               runtime="onnxruntime", path=str(tpath), sha256=tmeta.get("sha256"),
                               size_bytes=_size(tpath), spec={"kind": "onnx", "path": str(tpath)}))
    else:
        w = run.teacher_weights
        subjects.append(_blank(name="teacher-pytorch", model="teacher", format="pytorch", precision="fp32",
                               runtime="pytorch", path=_rel(run, w), sha256=tmeta.get("sha256"), size_bytes=_size(w),
                               spec={"kind": "torch", "path": str(w), "builder": "teacher", "arch": tmeta["arch"],
                                     "num_classes": num_classes, "image_size": size,
                                     "channels_last": bool(cfg.train.channels_last)}))
        try:
            tpath, tinfo = export_teacher_onnx(cfg, run, num_classes, bdir)
            subjects.append(_blank(name="teacher-onnx", model="teacher", format="onnx", precision="fp32",
                                   runtime="onnxruntime", path=_rel(run, tpath), sha256=tinfo["sha256"],
                                   size_bytes=_size(tpath), spec={"kind": "onnx", "path": str(tpath)}))
        except EdgekdError as e:
            subjects.append(_blank(name="teacher-onnx", model="teacher", format="onnx", precision="fp32",
                                   runtime="onnxruntime", status="failed", reason=str(e)))
    sw = run.require(run.student_dir("student") / "model.safetensors", "run the distill stage first")
    subjects.append(_blank(name="student-pytorch", model="student", format="pytorch", precision="fp32",
                           runtime="pytorch", path=_rel(run, sw), sha256=sha256_file(sw), size_bytes=_size(sw),
                           spec={"kind": "torch", "path": str(sw), "builder": "student", "arch": cfg.student.arch,
                                 "width_mult": cfg.student.width_mult, "num_classes": num_classes,
                                 "image_size": size, "channels_last": bool(cfg.train.channels_last)},
                           reference=True))
    subjects += artifact_subjects(run)
    return subjects


def artifact_subjects(run: RunDir) -> list[dict]:
    mpath = run.path("exports", "manifest.json")
    if not mpath.exists():
        return []
    try:
        manifest = read_json(mpath)
    except ValueError as e:
        raise EdgekdError(f"{mpath} is not valid JSON ({e})") from None
    out = []
    runtime_of = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}
    for a in manifest.get("artifacts", []):
        name = str(a.get("name") or a.get("path") or "artifact")
        fmt = str(a.get("format") or "")
        parity = a.get("parity") if isinstance(a.get("parity"), dict) else None
        e = _blank(name=name, model="student", format=fmt, precision=a.get("precision"),
                   runtime=runtime_of.get(fmt, fmt), path=a.get("path"), sha256=a.get("sha256"),
                   size_bytes=a.get("size_bytes"), parity=parity,
                   parity_status=(parity or {}).get("status"))
        status = a.get("status", "ok")
        if status != "ok":
            e.update(status="skipped" if status == "skipped" else "failed",
                     reason=a.get("reason") or f"export status {status}")
            out.append(e)
            continue
        p = run.root / str(a.get("path") or "")
        if not a.get("path") or not p.exists():
            e.update(status="failed", reason=f"artifact file missing: {p}")
            out.append(e)
            continue
        e["size_bytes"] = _size(p)
        if p.is_file():
            actual = sha256_file(p)
            if a.get("sha256") and actual != a["sha256"]:
                e.update(status="failed", reason="sha256 differs from the manifest: the file changed after export",
                         sha256=actual)
                out.append(e)
                continue
            e["sha256"] = actual
        mj = p.parent / "model.json"
        meta = read_json(mj) if mj.exists() else {}
        inp = meta.get("input") or {}
        e["model_input"] = inp
        why = can_run(fmt) if fmt in ("onnx", "tflite", "coreml") else f"unknown format {fmt!r}"
        if why:
            e.update(status="skipped", reason=why)
        else:
            e["spec"] = {"kind": fmt, "path": str(p), "layout": inp.get("layout")}
        out.append(e)
    return out


# ----------------------------------------------------------------------------------------
# measuring


def _accuracy(logits: np.ndarray, ev: dict, n: int) -> dict:
    pred = logits.argmax(1)
    out = {"accuracy": float((pred == ev["labels"][:n]).mean()) if n else None,
           "agreement_teacher": float((pred == ev["teacher"][:n].argmax(1)).mean()) if n else None,
           "agreement_student": float((pred == ev["student"][:n].argmax(1)).mean()) if n else None,
           "accuracy_images": n}
    return out


def measure_subjects(subjects: list[dict], profiles: list[dict], *, run: RunDir, cfg, data, ev: dict, n_acc: int,
                     bdir: Path, macs: dict, peaks: dict) -> list[dict]:
    b = cfg.bench
    entries: list[dict] = []
    input_cache: dict = {}
    for s in subjects:
        if s.get("status") != "ok" or "spec" not in s:
            e = {k: v for k, v in s.items() if k not in ("spec", "reference", "model_input")}
            entries.append(e)
            log(f"bench: {s['name']}: {s['status']} ({s.get('reason')})")
            continue
        inputs = _inputs_for(run, cfg, data, n_acc, s.get("model_input"), input_cache, bdir)
        acc: Optional[dict] = None
        for i, prof in enumerate(profiles):
            tag = f"{_safe(s['name'])}@{_safe(prof['profile'])}"
            logits_p = bdir / f"{_safe(s['name'])}.logits.npy" if i == 0 else None
            res = run_worker(s["spec"], inputs, bdir / f"{tag}.json", threads=prof["threads"], cpus=prof["cpus"],
                             min_queries=b.min_queries, min_seconds=b.min_seconds, warmup=b.warmup,
                             logits_out=logits_p)
            e = {k: v for k, v in s.items() if k not in ("spec", "reference", "model_input")}
            e.update(profile=prof["profile"], threads=prof["threads"], threads_requested=prof["threads_requested"],
                     cpus=prof["cpus"], pinned=bool(res.get("pinned", False)), bench_json=_rel(run, bdir / f"{tag}.json"))
            if res.get("status") != "ok":
                e.update(status=res.get("status", "failed"), reason=res.get("error", "measurement failed"))
                log(f"bench: {s['name']} [{prof['profile']}]: {e['status']}: {e['reason']}")
            else:
                rt = res.get("runtime") or {}
                e.update(runtime=rt.get("runtime", e["runtime"]), runtime_version=rt.get("runtime_version"),
                         latency_ms=res["latency_ms"], throughput_ips=res["throughput_ips"], queries=res["queries"],
                         timed_seconds=res["timed_seconds"], early_stop=res["early_stop"],
                         peak_rss_mb=res["peak_rss_mb"], baseline_rss_mb=res["baseline_rss_mb"],
                         import_ms=res["import_ms"], load_ms=res["load_ms"],
                         first_inference_ms=res["first_inference_ms"])
                if logits_p is not None and logits_p.exists():
                    lg = np.load(logits_p)
                    n = int(lg.shape[0])
                    acc = _accuracy(lg, ev, n)
                    ref = ev["teacher" if s["model"] == "teacher" else "student"][:n]
                    if lg.shape == ref.shape:
                        acc["max_abs_logit_diff_vs_pytorch"] = round(float(np.abs(lg - ref).max()), 6) if n else None
                if acc:
                    e.update(acc)
                m = macs.get(s["model"])
                e["macs"] = m
                peak = peaks.get(prof["profile"], {}).get("peak_gmacs_per_s")
                if m and peak:
                    e["compute_bound_ms"] = round(m / (peak * 1e9) * 1e3, 5)
                log(f"bench: {s['name']} [{prof['profile']}, {prof['threads']} thr]: p50 "
                    f"{res['latency_ms']['p50']:.3f} ms, {res['throughput_ips']:.0f}/s, peak RSS "
                    f"{res['peak_rss_mb']:.0f} MB" + (f", accuracy {acc['accuracy']:.1%}" if acc and
                                                      acc.get("accuracy") is not None else ""))
            if e["model"] == "teacher" and s["name"] == "teacher-onnx" and e.get("max_abs_logit_diff_vs_pytorch") is not None:
                e["parity_status"] = "passed" if e["max_abs_logit_diff_vs_pytorch"] <= 1e-3 and \
                    (e.get("agreement_teacher") or 0) == 1.0 else "failed"
            atomic_write_json(bdir / f"{tag}.json", {"entry": e, "worker": res})
            entries.append(e)
    for p in input_cache.values():
        Path(p).unlink(missing_ok=True)
    return entries


# ----------------------------------------------------------------------------------------
# goals and headline


def _ok(e: dict) -> bool:
    return e.get("status") == "ok" and e.get("latency_ms") is not None


def _find(entries: list[dict], profile: Optional[str], **kw) -> Optional[dict]:
    for e in entries:
        if _ok(e) and (profile is None or e.get("profile") == profile) and all(e.get(k) == v for k, v in kw.items()):
            return e
    return None


def _label(e: dict) -> str:
    fmt = FORMAT_NAMES.get(e.get("format") or "", e.get("format") or "?")
    return f"{fmt} {e.get('precision') or ''}".strip()


def compute_goals(artifacts: list[dict], teacher: list[dict], student_ref: list[dict], profiles: list[dict],
                  peaks: dict) -> list[dict]:
    prof = profiles[0]["profile"] if profiles else None
    goals = []
    # 1. speed-up on one runtime
    s = _find(artifacts, prof, format="onnx", precision="fp32")
    t = _find(teacher, prof, name="teacher-onnx")
    if t and t.get("parity_status") == "failed":  # an ONNX teacher that computes something else is no yardstick
        t = None
    runtime = "onnxruntime"
    if not (s and t):
        s, t, runtime = _find(student_ref, prof), _find(teacher, prof, name="teacher-pytorch"), "PyTorch"
    if s and t:
        v = t["latency_ms"]["p50"] / s["latency_ms"]["p50"]
        goals.append({"name": "speedup_same_runtime", "target": ">= 10x", "value": round(v, 2),
                      "status": "met" if v >= 10 else "not met",
                      "detail": f"median latency, {prof} profile ({s['threads']} thread(s)), {runtime}: student "
                                f"{_label(s)} {s['latency_ms']['p50']:.3f} ms vs teacher {_label(t)} "
                                f"{t['latency_ms']['p50']:.3f} ms"})
    else:
        goals.append({"name": "speedup_same_runtime", "target": ">= 10x", "value": None, "status": "unknown",
                      "detail": "needs the student and the teacher measured on one runtime (ONNX fp32 or PyTorch)"})
    # 2. int8 size vs fp32 teacher
    tsize_e = next((e for e in teacher if e.get("name") == "teacher-onnx" and e.get("size_bytes")), None) or \
        next((e for e in teacher if e.get("size_bytes")), None)
    int8 = [e for e in artifacts if "int8" in str(e.get("precision") or "") and e.get("size_bytes")
            and e.get("status") in ("ok", "skipped") and (e.get("status") == "ok" or e.get("format") == "coreml")]
    if tsize_e and int8:
        small = min(int8, key=lambda e: e["size_bytes"])
        v = tsize_e["size_bytes"] / small["size_bytes"]
        goals.append({"name": "int8_size_ratio", "target": ">= 40x", "value": round(v, 2),
                      "status": "met" if v >= 40 else "not met",
                      "detail": f"{small['name']} ({_label(small)}) {small['size_bytes'] / 1e6:.2f} MB vs teacher "
                                f"{_label(tsize_e)} {tsize_e['size_bytes'] / 1e6:.2f} MB"})
    else:
        goals.append({"name": "int8_size_ratio", "target": ">= 40x", "value": None, "status": "unknown",
                      "detail": "no int8 student artifact" if tsize_e else "teacher size unknown"})
    # 3. compute bound
    s = _find(artifacts, prof, format="onnx", precision="fp32") or _find(student_ref, prof)
    peak = peaks.get(prof, {}) if prof else {}
    if s and s.get("compute_bound_ms"):
        v = s["latency_ms"]["p50"] / s["compute_bound_ms"]
        goals.append({"name": "compute_bound_ratio", "target": "<= 2x", "value": round(v, 2),
                      "status": "met" if v <= 2 else "not met",
                      "detail": f"student {_label(s)} median {s['latency_ms']['p50']:.3f} ms vs compute bound "
                                f"{s['compute_bound_ms']:.4f} ms = {s['macs'] / 1e6:.1f} M MACs / "
                                f"{peak.get('peak_gmacs_per_s')} GMAC/s; {peak.get('assumption', '')}"})
    else:
        goals.append({"name": "compute_bound_ratio", "target": "<= 2x", "value": None, "status": "unknown",
                      "detail": "needs a measured fp32 student, its MAC count and the CPU clock"})
    return goals


def headline(artifacts: list[dict], teacher: list[dict], student_ref: list[dict], profiles: list[dict],
             rep: dict) -> Optional[str]:
    prof = profiles[0]["profile"] if profiles else None
    cand = None
    for fmt, prec in HEADLINE_PRIORITY:
        cand = next((e for e in artifacts if _ok(e) and e.get("profile") == prof and e.get("format") == fmt
                     and e.get("precision") == prec and e.get("parity_status") != "failed"), None)
        if cand:
            break
    cand = cand or _find(student_ref, prof)
    if not cand:
        return None
    # The teacher on the candidate's runtime if measured there, else the teacher as ONNX fp32 (its fastest form here).
    t = _find(teacher, prof, runtime=cand.get("runtime")) or _find(teacher, prof, name="teacher-onnx") \
        or _find(teacher, prof, name="teacher-pytorch")
    if not cand or not t:
        return None
    sa = cand.get("accuracy")
    ta = t.get("accuracy") if t.get("accuracy") is not None else (rep.get("teacher") or {}).get("accuracy")
    parts = [f"student {cand.get('precision') or ''} {FORMAT_NAMES.get(cand['format'], cand['format'])}:".replace("  ", " ")]
    if sa is not None and ta is not None:
        parts.append(f"{sa * 100:.1f}% vs teacher {ta * 100:.1f}% ({(sa - ta) * 100:+.1f} pts),".replace("-", "\u2212"))
    speed = t["latency_ms"]["p50"] / cand["latency_ms"]["p50"]
    parts.append(f"{speed:.1f}x faster," if speed < 10 else f"{speed:.0f}x faster,")
    tsize = next((e["size_bytes"] for e in teacher if e.get("name") == "teacher-onnx" and e.get("size_bytes")), None) \
        or t.get("size_bytes")
    if tsize and cand.get("size_bytes"):
        r = tsize / cand["size_bytes"]
        parts.append(f"{r:.1f}x smaller," if r < 10 else f"{r:.0f}x smaller,")
    if t.get("peak_rss_mb") is not None and cand.get("peak_rss_mb") is not None:
        d = t["peak_rss_mb"] - cand["peak_rss_mb"]
        parts.append(f"{abs(d):.0f} MB {'less' if d >= 0 else 'more'} memory")
    text = " ".join(parts).rstrip(",")
    where = "" if t.get("format") == "pytorch" else f" in {RUNTIME_NAMES.get(t.get('runtime'), t.get('runtime'))}"
    return (f"{text} ({prof} profile, {cand['threads']} of {cand['threads_requested']} requested threads; "
            f"vs teacher {_label(t)}{where})")


# ----------------------------------------------------------------------------------------
# the stage


def bench_fingerprint(cfg, run: RunDir) -> str:
    mpath = run.path("exports", "manifest.json")
    manifest = read_json(mpath) if mpath.exists() else {}
    tmeta = read_json(run.teacher_meta) if run.teacher_meta.exists() else {}
    sw = run.student_dir("student") / "model.safetensors"
    return fingerprint("bench", cfg.bench.model_dump(mode="json"), tmeta.get("sha256"),
                       sha256_file(sw) if sw.exists() else None,
                       [(a.get("name"), a.get("sha256"), a.get("status")) for a in manifest.get("artifacts", [])],
                       machine.describe()["cpu"], cfg.train.channels_last)


def run_bench(run: RunDir, cfg, force: bool = False) -> dict:
    """Measure, update report.json, render report.md/html. Returns the bench sections of the report."""
    from pipeline.data import load_split
    from pipeline.report import load_report, update_report

    from benchmarks.report import render

    t_start = time.time()
    fp = bench_fingerprint(cfg, run)
    rep = load_report(run)
    if not force and run.stage_done("bench", fp) and "artifacts" in rep:
        log("bench: up to date, skipped (edgekd bench RUN_DIR measures again)")
        render(run)
        return {k: rep.get(k) for k in ("artifacts", "teacher_bench", "student_bench", "bench_machine", "goals")}
    profiles = machine.parse_profiles(cfg.bench.profiles)
    data = load_split(run)
    k = len(data.classes)
    test_keys = [it.key for it in data.subset("test")]
    ev = load_eval_logits(run, test_keys)
    n_acc = len(test_keys) if cfg.bench.accuracy_images is None else min(cfg.bench.accuracy_images, len(test_keys))
    bdir = run.path("bench")
    bdir.mkdir(parents=True, exist_ok=True)
    for old in bdir.glob("*@*.json"):  # stale measurements of artifacts or profiles no longer present
        old.unlink()
    peaks = {p["profile"]: machine.peak_gmacs(p["threads"]) for p in profiles}
    desc = machine.describe()
    for p in profiles:
        if p["threads"] < p["threads_requested"]:
            log(f"bench: profile {p['profile']} asks for {p['threads_requested']} threads; this machine offers "
                f"{p['cores_available']} core(s), measuring with {p['threads']}")
    macs = model_macs(cfg, run, k, bdir)
    subjects = collect_subjects(cfg, run, k, bdir)
    entries = measure_subjects(subjects, profiles, run=run, cfg=cfg, data=data, ev=ev, n_acc=n_acc, bdir=bdir,
                               macs=macs, peaks=peaks)
    teacher = [e for e in entries if e["model"] == "teacher"]
    student_ref = [e for e in entries if e["name"] == "student-pytorch"]
    artifacts = [e for e in entries if e["model"] == "student" and e["name"] != "student-pytorch"]
    goals = compute_goals(artifacts, teacher, student_ref, profiles, peaks)
    head = headline(artifacts, teacher, student_ref, profiles, rep)
    bench_machine = {**desc, "profiles": profiles, "compute_peak": peaks, "macs": macs}
    settings = {"min_queries": cfg.bench.min_queries, "min_seconds": cfg.bench.min_seconds,
                "warmup": cfg.bench.warmup, "accuracy_images": n_acc,
                "latency_inputs": "8 test images cycled, batch 1, single stream",
                "process": "one fresh subprocess per artifact and profile"}
    sections = {"artifacts": artifacts, "teacher_bench": teacher, "student_bench": student_ref,
                "bench_machine": bench_machine, "bench_settings": settings, "goals": goals, "headline": head}
    update_report(run, **sections)
    run.mark_stage("bench", fp, time.time() - t_start)
    update_report(run)  # stage wall time into report.json
    render(run)
    if head:
        log(f"bench: {head}")
    for g in goals:
        log(f"bench goal {g['name']} ({g['target']}): {g['status']}" +
            (f", {g['value']}" if g["value"] is not None else ""))
    log(f"bench: done in {time.time() - t_start:.0f}s: {run.path('report.html')}")
    return sections
