"""The bench stage: measure every exported artifact and the teacher like a device would run them.

    run_bench(run, cfg) -> report sections

Subjects (benchmarks/subjects.py): the teacher in PyTorch and as ONNX fp32, the PyTorch student and
every artifact of RUN_DIR/exports/manifest.json. Measuring (benchmarks/measure.py): each subject
once per thread profile, each time in a fresh subprocess (benchmarks/worker.py). Goals and headline:
benchmarks/goals.py.

Writes RUN_DIR/bench/<name>@<profile>.json per measurement and <name>.logits.npy, updates
report.json (artifacts, teacher_bench, student_bench, bench_machine, bench_settings, goals,
headline) and renders report.md / report.html (benchmarks/report.py).
"""

from __future__ import annotations

import time

from edgekd.benchmarks import machine
from edgekd.benchmarks.goals import compute_goals, converter_goal, converter_reference, headline, int8_advice
from edgekd.benchmarks.measure import measure_subjects
from edgekd.benchmarks.report import render
from edgekd.benchmarks.subjects import collect_subjects, load_eval_logits, model_macs
from edgekd.export.manifest import artifacts as manifest_artifacts
from edgekd.export.manifest import manifest_path, read_manifest
from edgekd.export.runtimes import runtime_options
from edgekd.pipeline.progress import log
from edgekd.pipeline.report import load_report, update_report
from edgekd.pipeline.rundir import RunDir, fingerprint, read_json, sha256_file


def bench_fingerprint(cfg, run: RunDir) -> str:
    arts = manifest_artifacts(read_manifest(run.root)) if manifest_path(run.root).exists() else []
    tmeta = read_json(run.teacher_meta) if run.teacher_meta.exists() else {}
    sw = run.student_dir("student") / "model.safetensors"
    return fingerprint(
        "bench",
        cfg.bench.model_dump(mode="json"),
        tmeta.get("sha256"),
        sha256_file(sw) if sw.exists() else None,
        [(a.get("name"), a.get("sha256"), a.get("status")) for a in arts],
        machine.describe()["cpu"],
        cfg.train.channels_last,
    )


def run_bench(run: RunDir, cfg, force: bool = False) -> dict:
    """Measure, update report.json, render report.md/html. Returns the bench sections of the report."""
    from edgekd.pipeline.data import load_split

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
            log(
                f"bench: profile {p['profile']} asks for {p['threads_requested']} threads; this machine offers "
                f"{p['cores_available']} core(s), measuring with {p['threads']}"
            )
    macs = model_macs(cfg, run, k, bdir)
    subjects = collect_subjects(cfg, run, k, bdir)
    entries = measure_subjects(
        subjects, profiles, run=run, cfg=cfg, data=data, ev=ev, n_acc=n_acc, bdir=bdir, macs=macs, peaks=peaks
    )
    teacher = [e for e in entries if e["model"] == "teacher"]
    student_ref = [e for e in entries if e["name"] == "student-pytorch"]
    artifacts = [e for e in entries if e["model"] == "student" and e["name"] != "student-pytorch"]
    goals = compute_goals(artifacts, teacher, student_ref, profiles, peaks)
    prof0 = profiles[0]["profile"] if profiles else None
    arts_manifest = manifest_artifacts(read_manifest(run.root)) if manifest_path(run.root).exists() else []
    reference = converter_reference(arts_manifest, artifacts, prof0)
    goals.append(converter_goal(reference))
    bench_machine = {
        **desc,
        "profiles": profiles,
        "compute_peak": peaks,
        "macs": macs,
        "runtime_options": runtime_options(),
    }
    head = headline(artifacts, teacher, student_ref, profiles, {**rep, "bench_machine": bench_machine})
    settings = {
        "min_queries": cfg.bench.min_queries,
        "min_seconds": cfg.bench.min_seconds,
        "warmup": cfg.bench.warmup,
        "accuracy_images": n_acc,
        "latency_inputs": "8 test images cycled, batch 1, single stream",
        "process": "one fresh subprocess per artifact and profile",
    }
    sections = {
        "artifacts": artifacts,
        "teacher_bench": teacher,
        "student_bench": student_ref,
        "bench_machine": bench_machine,
        "bench_settings": settings,
        "goals": goals,
        "headline": head,
        "converter_reference": reference,
        "int8_advice": int8_advice(artifacts, prof0, {"bench_machine": bench_machine}),
    }
    update_report(run, **sections)
    run.mark_stage("bench", fp, time.time() - t_start)
    update_report(run)  # stage wall time into report.json
    render(run)
    if head:
        log(f"bench: {head}")
    for g in goals:
        log(
            f"bench goal {g['name']} ({g['target']}): {g['status']}"
            + (f", {g['value']}" if g["value"] is not None else "")
        )
    log(f"bench: done in {time.time() - t_start:.0f}s: {run.path('report.html')}")
    return sections
