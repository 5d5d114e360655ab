"""The bench stage's goals (reported, not enforced) and its one-line headline, from the measured entries.

Goals: the student/teacher speed-up on one runtime (>= 10x), the smallest int8 artifact against the
fp32 teacher (>= 40x smaller), the fp32 student's median latency against its compute bound
(<= 2x), and each shipped TFLite float file against the fastest converter candidate of the export stage
(<= 1.02x, `converter_goal`, from the manifest's converter choice). When int8 is slower than the float file
on this CPU, `int8_advice` says so (with the CPU flags) and the headline ends with it. Only verified
artifacts count: measured here and past their parity gate in their own runtime
(an `unverified` or `weights_checked` CoreML file off macOS never does). The headline speaks for the verified
artifact of lowest `headline_rank` in the format table (edgekd.export.formats: a fixed priority, TFLite int8
first, what the Android app ships; not the smallest file), else the PyTorch student, with macro-F1 beside accuracy;
when the KD verdict says distillation hurt, or the evaluate stage's advice has a finding, the headline
starts with it in words ("KD did not help: ...").
"""

from __future__ import annotations

from typing import Optional

from edgekd.export import formats
from edgekd.export.formats import FORMATS

# Display names: the export formats' and runtimes' from the format table, plus PyTorch (the teacher
# and the student as trained: reference subjects, not an export format).
FORMAT_LABELS = {**formats.FORMAT_LABELS, "pytorch": "PyTorch"}
RUNTIME_LABELS = {**formats.RUNTIME_LABELS, "pytorch": "PyTorch"}
# (format, precision) in headline order.
HEADLINE_PRIORITY = [
    (s.format, s.precision)
    for s in sorted((s for s in FORMATS.values() if s.headline_rank is not None), key=lambda s: s.headline_rank)
]


def _ok(e: dict) -> bool:
    return e.get("status") == "ok" and e.get("latency_ms") is not None


def _verified(e: dict) -> bool:
    """Measured here and, for an exported artifact, numerically checked in its own runtime (parity passed)."""
    if e.get("format") == "pytorch":
        return _ok(e)
    return _ok(e) and str(e.get("parity_status") or "").lower() in ("passed", "pass", "ok")


def _find(entries: list[dict], profile: Optional[str], **kw) -> Optional[dict]:
    for e in entries:
        if _ok(e) and (profile is None or e.get("profile") == profile) and all(e.get(k) == v for k, v in kw.items()):
            return e
    return None


def label(e: dict) -> str:
    """'TFLite int8', 'PyTorch fp32', ..."""
    fmt = FORMAT_LABELS.get(e.get("format") or "", e.get("format") or "?")
    return f"{fmt} {e.get('precision') or ''}".strip()


def compute_goals(
    artifacts: list[dict], teacher: list[dict], student_ref: list[dict], profiles: list[dict], peaks: dict
) -> list[dict]:
    prof = profiles[0]["profile"] if profiles else None
    goals = []
    # 1. speed-up on one runtime
    s = _find(artifacts, prof, format="onnx", precision="fp32")
    t = _find(teacher, prof, name="teacher-onnx")
    if t and t.get("parity_status") == "failed":  # an ONNX teacher that computes something else is no yardstick
        t = None
    runtime = RUNTIME_LABELS["onnxruntime"]
    if not (s and t):
        s, t = _find(student_ref, prof), _find(teacher, prof, name="teacher-pytorch")
        runtime = RUNTIME_LABELS["pytorch"]
    if s and t:
        v = t["latency_ms"]["p50"] / s["latency_ms"]["p50"]
        goals.append(
            {
                "name": "speedup_same_runtime",
                "target": ">= 10x",
                "value": round(v, 2),
                "status": "met" if v >= 10 else "not met",
                "detail": f"median latency, {prof} profile ({s['threads']} thread(s)), {runtime}: student "
                f"{label(s)} {s['latency_ms']['p50']:.3f} ms vs teacher {label(t)} "
                f"{t['latency_ms']['p50']:.3f} ms",
            }
        )
    else:
        goals.append(
            {
                "name": "speedup_same_runtime",
                "target": ">= 10x",
                "value": None,
                "status": "unknown",
                "detail": "needs the student and the teacher measured on one runtime (ONNX fp32 or PyTorch)",
            }
        )
    # 2. int8 size vs fp32 teacher
    tsize_e = next((e for e in teacher if e.get("name") == "teacher-onnx" and e.get("size_bytes")), None) or next(
        (e for e in teacher if e.get("size_bytes")), None
    )
    # verified artifacts only: measured here ("ok") and past their parity gate in their own runtime; an
    # unverified or weights_checked file (CoreML off macOS) never counts
    int8 = [
        e
        for e in artifacts
        if "int8" in str(e.get("precision") or "")
        and e.get("size_bytes")
        and _verified(e)
        and (prof is None or e.get("profile") in (prof, None))
    ]
    if tsize_e and int8:
        small = min(int8, key=lambda e: e["size_bytes"])
        v = tsize_e["size_bytes"] / small["size_bytes"]
        goals.append(
            {
                "name": "int8_size_ratio",
                "target": ">= 40x",
                "value": round(v, 2),
                "status": "met" if v >= 40 else "not met",
                "detail": f"{small['name']} ({label(small)}) {small['size_bytes'] / 1e6:.2f} MB vs teacher "
                f"{label(tsize_e)} {tsize_e['size_bytes'] / 1e6:.2f} MB",
            }
        )
    else:
        goals.append(
            {
                "name": "int8_size_ratio",
                "target": ">= 40x",
                "value": None,
                "status": "unknown",
                "detail": "no verified int8 student artifact (measured here, parity passed)"
                if tsize_e
                else "teacher size unknown",
            }
        )
    # 3. compute bound
    s = _find(artifacts, prof, format="onnx", precision="fp32") or _find(student_ref, prof)
    peak = peaks.get(prof, {}) if prof else {}
    if s and s.get("compute_bound_ms"):
        v = s["latency_ms"]["p50"] / s["compute_bound_ms"]
        goals.append(
            {
                "name": "compute_bound_ratio",
                "target": "<= 2x",
                "value": round(v, 2),
                "status": "met" if v <= 2 else "not met",
                "detail": f"student {label(s)} median {s['latency_ms']['p50']:.3f} ms vs compute bound "
                f"{s['compute_bound_ms']:.4f} ms = {s['macs'] / 1e6:.1f} M MACs / "
                f"{peak.get('peak_gmacs_per_s')} GMAC/s; {peak.get('assumption', '')}",
            }
        )
    else:
        goals.append(
            {
                "name": "compute_bound_ratio",
                "target": "<= 2x",
                "value": None,
                "status": "unknown",
                "detail": "needs a measured fp32 student, its MAC count and the CPU clock",
            }
        )
    return goals


def kd_warning(rep: dict) -> Optional[str]:
    """'KD did not help: ...' when report.json's kd_verdict says KD hurt or `advice` has a finding; else None."""
    v = rep.get("kd_verdict") or {}
    advice = [a for a in rep.get("advice") or [] if a]
    if v.get("conclusion") != "KD hurt" and not advice:
        return None
    parts = []
    if v.get("conclusion") == "KD hurt":
        lo, hi = v["kd_gain_ci95"]
        seeds = f", {v['seeds']} seeds" if v.get("seeds", 1) > 1 else ""
        parts.append(
            f"the KD student trails the hard-label baseline by {-v['kd_gain_mean']:.1f} pts "
            f"(95% CI [{lo:+.1f}, {hi:+.1f}]{seeds}, McNemar p={v['mcnemar_p']:.2g}); ship the baseline or retune KD"
        )
    parts += advice
    lead = "KD helped, but" if v.get("conclusion") == "KD helped" else "KD did not help:"
    return f"{lead} " + "; ".join(parts) + "."


def _macro_f1(rep: dict) -> Optional[str]:
    """'macro-F1 0.80 vs 0.85 (PyTorch)': the shipped student (seed 0) and the teacher on the test split."""
    s, t = rep.get("student") or {}, rep.get("teacher") or {}
    seed0 = (s.get("per_seed") or [{}])[0]
    sf = seed0.get("macro_f1", s.get("macro_f1"))
    if sf is None or t.get("macro_f1") is None:
        return None
    return f"macro-F1 {sf:.2f} vs {t['macro_f1']:.2f} (PyTorch),"


def headline(
    artifacts: list[dict], teacher: list[dict], student_ref: list[dict], profiles: list[dict], rep: dict
) -> Optional[str]:
    """The bench's one sentence (report.json `headline`), led by the KD warning when there is one."""
    text = measured_headline(artifacts, teacher, student_ref, profiles, rep)
    advice = int8_advice(artifacts, profiles[0]["profile"] if profiles else None, rep) if text else None
    if advice:
        text = f"{text}. {advice[0].upper()}{advice[1:]}."
    warn = kd_warning(rep)
    if text and warn:
        return f"{warn} {text}"
    return text or warn


def current_headline(rep: dict) -> Optional[str]:
    """The headline from what report.json holds now (the verdict may be newer than the measurements)."""
    if rep.get("artifacts") is not None and rep.get("bench_machine"):
        text = headline(
            rep.get("artifacts") or [],
            rep.get("teacher_bench") or [],
            rep.get("student_bench") or [],
            rep["bench_machine"].get("profiles") or [],
            rep,
        )
        if text:
            return text
    if rep.get("headline"):
        return rep["headline"]
    return kd_warning(rep)


def measured_headline(
    artifacts: list[dict], teacher: list[dict], student_ref: list[dict], profiles: list[dict], rep: dict
) -> Optional[str]:
    prof = profiles[0]["profile"] if profiles else None
    cand = None
    for fmt, prec in HEADLINE_PRIORITY:
        cand = next(
            (
                e
                for e in artifacts
                if _verified(e) and e.get("profile") == prof and e.get("format") == fmt and e.get("precision") == prec
            ),
            None,
        )
        if cand:
            break
    cand = cand or _find(student_ref, prof)
    if not cand:
        return None
    # The teacher on the candidate's runtime if measured there, else the teacher as ONNX fp32 (its fastest form here).
    t = (
        _find(teacher, prof, runtime=cand.get("runtime"))
        or _find(teacher, prof, name="teacher-onnx")
        or _find(teacher, prof, name="teacher-pytorch")
    )
    if not cand or not t:
        return None
    sa = cand.get("accuracy")
    ta = t.get("accuracy") if t.get("accuracy") is not None else (rep.get("teacher") or {}).get("accuracy")
    parts = [
        f"student {cand.get('precision') or ''} {FORMAT_LABELS.get(cand['format'], cand['format'])}:".replace("  ", " ")
    ]
    if sa is not None and ta is not None:
        parts.append(f"{sa * 100:.1f}% vs teacher {ta * 100:.1f}% ({(sa - ta) * 100:+.1f} pts),".replace("-", "\u2212"))
    f1 = _macro_f1(rep)
    if f1:
        parts.append(f1)
    speed = t["latency_ms"]["p50"] / cand["latency_ms"]["p50"]
    parts.append(f"{speed:.1f}x faster," if speed < 10 else f"{speed:.0f}x faster,")
    tsize = next(
        (e["size_bytes"] for e in teacher if e.get("name") == "teacher-onnx" and e.get("size_bytes")), None
    ) or t.get("size_bytes")
    if tsize and cand.get("size_bytes"):
        r = tsize / cand["size_bytes"]
        parts.append(f"{r:.1f}x smaller," if r < 10 else f"{r:.0f}x smaller,")
    if t.get("peak_rss_mb") is not None and cand.get("peak_rss_mb") is not None:
        d = t["peak_rss_mb"] - cand["peak_rss_mb"]
        parts.append(f"{abs(d):.0f} MB {'less' if d >= 0 else 'more'} memory")
    text = " ".join(parts).rstrip(",")
    where = "" if t.get("format") == "pytorch" else f" in {RUNTIME_LABELS.get(t.get('runtime'), t.get('runtime'))}"
    return (
        f"{text} ({prof} profile, {cand['threads']} of {cand['threads_requested']} requested threads; "
        f"vs teacher {label(t)}{where})"
    )


# ----------------------------------------------------------------------------------------
# converter reference (issue 16) and int8 where it pays

CONVERTER_GOAL = 1.02  # shipped TFLite file / best candidate the toolchain built, both timed in the export stage


def converter_reference(manifest_artifacts: list[dict], artifacts: list[dict], profile: Optional[str]) -> list[dict]:
    """One row per shipped artifact whose manifest entry records a converter choice (export/candidates.py):
    the shipped converter and its export-stage latency beside the best candidate's (passed parity) and the
    fastest built (any parity), their ratio, and the bench stage's p50 of the shipped file."""
    rows = []
    for a in manifest_artifacts:
        d = a.get("details") if isinstance(a.get("details"), dict) else {}
        choice, cands = d.get("choice"), d.get("candidates")
        if not isinstance(choice, dict) or not isinstance(cands, list):
            continue
        by = {c.get("converter"): c for c in cands}
        shipped = by.get(choice.get("shipped")) or {}
        bench = _find(artifacts, profile, name=a.get("name"))
        s_ms, f_ms = shipped.get("latency_ms"), choice.get("fastest_built_ms")
        rows.append(
            {
                "name": a.get("name"),
                "precision": a.get("precision"),
                "shipped": choice.get("shipped"),
                "shipped_ms": s_ms,
                "best": choice.get("chosen"),
                "best_ms": choice.get("best_ms"),
                "fastest_built": choice.get("fastest_built"),
                "fastest_built_ms": f_ms,
                "shipped_over_best": round(s_ms / f_ms, 4) if s_ms and f_ms else None,
                "bench_p50_ms": bench["latency_ms"]["p50"] if bench else None,
                "why": choice.get("why"),
                "timed_on": choice.get("timed_on"),
                "candidates": [
                    {k: c.get(k) for k in ("converter", "status", "latency_ms", "size_bytes", "reason")} for c in cands
                ],
            }
        )
    return rows


def converter_goal(reference: list[dict]) -> dict:
    """Goal: every shipped TFLite file within CONVERTER_GOAL x of the fastest candidate built in the same run."""
    vals = [r for r in reference if r.get("shipped_over_best") is not None]
    base = {"name": "tflite_vs_best_converter", "target": f"<= {CONVERTER_GOAL:g}x"}
    if not vals:
        why = "no converter candidates were timed (one candidate configured or built)" if reference else None
        return {**base, "value": None, "status": "unknown", "detail": why or "no manifest converter choice"}
    worst = max(vals, key=lambda r: r["shipped_over_best"])
    v = worst["shipped_over_best"]
    return {
        **base,
        "value": round(v, 3),
        "status": "met" if v <= CONVERTER_GOAL else "not met",
        "detail": f"worst of {len(vals)}: {worst['name']} ships {worst['shipped']} {worst['shipped_ms']:.3f} ms vs "
        f"fastest candidate {worst['fastest_built']} {worst['fastest_built_ms']:.3f} ms (export stage, interleaved)",
    }


def _cpu_flags(rep: dict) -> list[str]:
    flags = (rep.get("bench_machine") or {}).get("cpu_flags")
    if flags is None:
        from edgekd.pipeline.machine import cpu_flags

        flags = cpu_flags()
    return list(flags)


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_advice(artifacts: list[dict], profile: Optional[str], rep: dict) -> Optional[str]:
    """When the verified TFLite (else ONNX) int8 artifact is slower than the same container's fastest verified
    float artifact on this CPU: one sentence that says so and recommends the float file; else None."""
    for fmt in ("tflite", "onnx"):
        here = [e for e in artifacts if _verified(e) and e.get("profile") == profile and e.get("format") == fmt]
        q = next((e for e in here if e.get("precision") == "int8"), None)
        floats = [e for e in here if e.get("precision") in ("fp32", "fp16")]
        if not q or not floats:
            continue
        f = min(floats, key=lambda e: e["latency_ms"]["p50"])
        if q["latency_ms"]["p50"] <= f["latency_ms"]["p50"]:
            continue
        flags = _cpu_flags(rep)
        dot = [x for x in flags if x in INT8_DOT_FLAGS]
        cpu = f"this CPU ({' '.join(flags) or 'flags unknown'}; " + (
            f"int8 dot product: {' '.join(dot)})" if dot else "no int8 dot-product instructions)"
        )
        return (
            f"int8 does not pay on {cpu}: {label(q)} p50 {q['latency_ms']['p50']:.3f} ms vs {label(f)} "
            f"{f['latency_ms']['p50']:.3f} ms ({q['latency_ms']['p50'] / f['latency_ms']['p50']:.2f}x slower); "
            f"on this CPU ship {f['name']} ({f.get('precision')}), int8 only for its size or for CPUs with "
            "VNNI / ARM dotprod"
        )
    return None
