"""The bench stage's goals (reported, not enforced) and its one-line headline, from the measured entries.

Goals: the student/teacher speed-up on one runtime (>= 10x), the smallest int8 artifact against the
fp32 teacher (>= 40x smaller), and the fp32 student's median latency against its compute bound
(<= 2x). The headline speaks for the measured artifact of lowest `headline_rank` in the format table
(edgekd.export.formats) that did not fail parity, else the PyTorch student, with macro-F1 beside accuracy;
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
    int8 = [
        e
        for e in artifacts
        if "int8" in str(e.get("precision") or "")
        and e.get("size_bytes")
        and e.get("status") in ("ok", "skipped")
        and (e.get("status") == "ok" or e.get("format") == "coreml")
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
                "detail": "no int8 student artifact" if tsize_e else "teacher size unknown",
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
                if _ok(e)
                and e.get("profile") == prof
                and e.get("format") == fmt
                and e.get("precision") == prec
                and e.get("parity_status") != "failed"
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
