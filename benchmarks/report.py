"""report.md and a self-contained report.html from report.json (the full report a person reads).

    render(run) -> (report.md path, report.html path)

THE report renderer: the stage runner calls `render(run)` after the stages, so it works at any point
after the evaluate stage (sections without data say so) and imports nothing above this package. One
function per section (SECTIONS, top to bottom) turns report.json into blocks. The markdown links
its figures from RUN_DIR/report_files/*.png; the HTML embeds them as base64 data URIs, has no
external resources and opens offline. Both come from one list of blocks, so they say the same.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Optional

from edgekd.pipeline.report import load_report
from edgekd.pipeline.rundir import RunDir, atomic_write_bytes, read_json

FIGURES = ("pareto", "size_memory", "confusion", "training_curves")
Block = tuple  # ("h1"|"h2"|"h3"|"p"|"strong"|"list"|"table"|"img"|"code", ...)


# ----------------------------------------------------------------------------------------
# formatting helpers


def pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def num(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def mb(n: Optional[float]) -> str:
    return "—" if not n else (f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB")


def ms(x: Optional[float]) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _first_profile(rep: dict) -> Optional[str]:
    profs = (rep.get("bench_machine") or {}).get("profiles") or []
    return profs[0]["profile"] if profs else None


def _references(rep: dict) -> list[dict]:
    """The teacher and PyTorch student measurements (the yardsticks beside the artifacts)."""
    return (rep.get("teacher_bench") or []) + (rep.get("student_bench") or [])


def measurement_rows(entries: list[dict]) -> list[list[str]]:
    rows = []
    for e in entries:
        lat = e.get("latency_ms") or {}
        thr = (
            "—"
            if e.get("threads") is None
            else (
                f"{e['threads']}"
                + (f" of {e['threads_requested']}" if e.get("threads_requested") not in (None, e["threads"]) else "")
            )
        )
        status = e.get("status") or "—"
        if e.get("early_stop"):
            status += " (stopped at time cap)"
        rows.append(
            [
                e.get("name") or "?",
                e.get("model") or "",
                e.get("format") or "",
                e.get("precision") or "—",
                e.get("profile") or "—",
                thr,
                mb(e.get("size_bytes")),
                pct(e.get("accuracy")),
                pct(e.get("agreement_teacher")),
                pct(e.get("agreement_student")),
                ms(lat.get("p50")),
                ms(lat.get("p95")),
                ms(lat.get("p99")),
                num(e.get("throughput_ips"), 1),
                num(e.get("peak_rss_mb"), 0),
                ms(e.get("load_ms")),
                ms(e.get("first_inference_ms")),
                e.get("parity_status") or "—",
                status,
            ]
        )
    return rows


MEASUREMENT_HEADERS = [
    "artifact",
    "model",
    "format",
    "precision",
    "profile",
    "threads",
    "size",
    "accuracy",
    "agree teacher",
    "agree student",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "throughput /s",
    "peak RSS MB",
    "load ms",
    "first inference ms",
    "parity",
    "status",
]


def latency_rows(entries: list[dict]) -> list[list[str]]:
    rows = []
    for e in entries:
        lat = e.get("latency_ms")
        if not lat:
            continue
        rows.append(
            [e["name"], e.get("profile") or "—", str(e.get("queries") or "—")]
            + [ms(lat.get(k)) for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")]
            + [ms(e.get("compute_bound_ms")) if e.get("compute_bound_ms") else "—"]
        )
    return rows


# ----------------------------------------------------------------------------------------
# the sections: each (run, report.json, figures) -> blocks


def _histories(run: RunDir) -> dict[str, list[dict]]:
    out = {}
    for kind, label in (("student", "KD student"), ("baseline", "hard-label baseline")):
        p = run.student_dir(kind) / "history.json"
        try:
            out[label] = read_json(p).get("history", []) if p.exists() else []
        except (ValueError, AttributeError):
            out[label] = []
    return out


def acc_f1(r: dict) -> str:
    """'72.1% ± 0.8, macro-F1 0.44': accuracy (mean ± std over seeds when there are several) and macro-F1."""
    out = pct(r.get("accuracy"))
    if (r.get("seeds") or 1) > 1 and r.get("accuracy_std") is not None:
        out += f" ± {r['accuracy_std'] * 100:.1f}"
    if r.get("macro_f1") is not None:
        out += f", macro-F1 {r['macro_f1']:.2f}"
    return out


def verdict_sentence(v: dict) -> str:
    """'KD +1.2 pts (95% CI [-0.8, +3.1], 3 seeds, McNemar p=0.41): no significant difference'."""
    lo, hi = v["kd_gain_ci95"]
    seeds = f", {v['seeds']} seeds" if v.get("seeds", 1) > 1 else ""
    return (
        f"KD {v['kd_gain_mean']:+.1f} pts (95% CI [{lo:+.1f}, {hi:+.1f}]{seeds}, McNemar p={v['mcnemar_p']:.2g}): "
        f"{v['conclusion']}"
    )


def summary_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """Title, headline, and the distillation result in one sentence."""
    from edgekd.benchmarks.goals import current_headline

    cfg = rep.get("config") or {}
    blocks: list[Block] = [("h1", f"edgekd run: {cfg.get('name', run.root.name)} ({cfg.get('preset', '?')} preset)")]
    t, s, b = rep.get("teacher"), rep.get("student"), rep.get("baseline")
    head = current_headline(rep)
    if head:
        blocks.append(("strong", head))
    if t and s:
        drop = (s["accuracy"] - t["accuracy"]) * 100
        line = (
            f"Distilled student {s.get('arch')}: {acc_f1(s)} ({drop:+.1f} pts vs teacher {t.get('arch')}: {acc_f1(t)})"
        )
        if b:
            v = rep.get("kd_verdict")
            kd = verdict_sentence(v) if v else f"KD {rep.get('kd_gain_points', 0):+.1f} pts"
            line += f"; hard-label baseline: {acc_f1(b)}. {kd}"
        blocks.append(("p", line + "."))
    if not rep:
        blocks.append(("p", "report.json is empty: run `edgekd run` (at least up to the evaluate stage) first."))
    return blocks


def models_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """Teacher, student and baseline in PyTorch on the test split (evaluate stage)."""
    t, s, b = rep.get("teacher"), rep.get("student"), rep.get("baseline")
    if not (t or s):
        return []
    rows = []
    for name, r in (("teacher", t), ("student (KD)", s), ("baseline (hard labels)", b)):
        if not r:
            continue
        several = (r.get("seeds") or 1) > 1
        rows.append(
            [
                name,
                str(r.get("arch")),
                f"{r['params'] / 1e6:.2f} M" if r.get("params") else "—",
                pct(r.get("accuracy")) + (f" ± {r['accuracy_std'] * 100:.1f}" if several else ""),
                num(r.get("macro_f1"), 3) + (f" ± {r['macro_f1_std']:.3f}" if several else ""),
                num(r.get("ece"), 3),
                pct(r.get("agreement_teacher")),
                pct(r.get("agreement_teacher_train")),
            ]
        )
    header = ["model", "arch", "params", "accuracy", "macro-F1", "ECE", "agreement with teacher", "on train images"]
    blocks: list[Block] = [("h2", "Models (PyTorch, test split)"), ("table", header, rows)]
    seeds = max((r or {}).get("seeds") or 1 for r in (s, b))
    if seeds > 1:
        blocks.append(
            (
                "p",
                f"Student and baseline: mean ± std over {seeds} seeds; ECE, agreement, per-class recall and the "
                "confusion matrix are seed 0's (the shipped model).",
            )
        )
    if (s or {}).get("agreement_teacher_train") is not None:
        blocks.append(
            (
                "p",
                f"Agreement on train images: top-1 agreement with the teacher on {s.get('fidelity_images')} training "
                "images (fidelity). Low there too, the student underfits the teacher (a larger student or a longer "
                "schedule); high there but low on test, it needs more diverse distillation data.",
            )
        )
    return blocks


def verdict_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """Did distillation help: the KD verdict over seeds (evaluate stage) and the advice."""
    v, advice = rep.get("kd_verdict"), (rep.get("advice") or []) + (rep.get("fidelity_advice") or [])
    if not v and not advice:
        return []
    blocks: list[Block] = [("h2", "Did distillation help?")]
    if v:
        lo, hi = v["kd_gain_ci95"]
        n = v.get("seeds", 1)
        blocks.append(
            (
                "p",
                f"{v['conclusion']}: KD gain (student − baseline accuracy) {v['kd_gain_mean']:+.2f} pts"
                + (f" ± {v['kd_gain_std']:.2f} (std over {n} seeds)" if n > 1 else " (1 seed)")
                + f", 95% CI [{lo:+.2f}, {hi:+.2f}] (paired bootstrap over the {v.get('test_images', '?')} test "
                f"images), McNemar p={v['mcnemar_p']:.3g} (seed 0, exact, two-sided).",
            )
        )
        sa, ba = v.get("student_accuracy") or [], v.get("baseline_accuracy") or []
        ps = v.get("mcnemar_p_per_seed") or []
        if n > 1 and len(sa) == len(ba) == len(ps) == n:
            rows = [[str(i), pct(sa[i]), pct(ba[i]), f"{(sa[i] - ba[i]) * 100:+.1f}", f"{ps[i]:.3g}"] for i in range(n)]
            blocks.append(("table", ["seed", "student (KD)", "baseline", "KD gain pts", "McNemar p"], rows))
        if n == 1:
            blocks.append(("p", "One seed: the interval covers the test sample only; `--seeds 3` adds trainings."))
    if advice:
        blocks += [("h3", "Advice"), ("list", advice)]
    return blocks


def benchmark_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """The measurements of the bench stage: one table row per subject and profile, latency distributions."""
    blocks: list[Block] = [("h2", "On-device-style benchmark")]
    if "artifacts" not in rep:
        blocks.append(("p", f"Not benchmarked yet: run `edgekd bench {run.root}`."))
        return blocks
    arts = rep.get("artifacts") or []
    st = rep.get("bench_settings") or {}
    blocks.append(
        (
            "p",
            f"Each artifact runs in its own fresh process: load, first inference, "
            f"{st.get('warmup', '?')} warm-up runs, then single-stream batch-1 queries until at least "
            f"{st.get('min_queries', '?')} queries and {st.get('min_seconds', '?')} s. Accuracy and "
            f"agreement on {st.get('accuracy_images', '?')} test images. Peak RSS is the whole "
            f"process (runtime included) before the accuracy pass.",
        )
    )
    measured = _references(rep) + arts
    if measured:
        blocks.append(("table", MEASUREMENT_HEADERS, measurement_rows(measured)))
    blocks += converter_reference_blocks(rep)
    if rep.get("int8_advice"):
        blocks.append(("strong", f"int8 on this CPU: {rep['int8_advice']}."))
    if not arts:
        blocks.append(
            (
                "p",
                "No exported artifacts yet: run the export stage "
                f"(`edgekd run --out {run.root} --stages export,bench`). The teacher and the PyTorch "
                "student above are measured for reference.",
            )
        )
    not_measured = [e for e in arts if e.get("status") != "ok"]
    if not_measured:
        blocks.append(("h3", "Artifacts not measured"))
        blocks.append(
            (
                "list",
                [
                    f"{e['name']} ({e.get('format')} {e.get('precision') or ''}): {e['status']} — "
                    f"{e.get('reason') or 'no reason given'}"
                    for e in not_measured
                ],
            )
        )
    lrows = latency_rows(measured)
    if lrows:
        blocks.append(("h3", "Latency distribution (ms)"))
        blocks.append(
            (
                "table",
                [
                    "artifact",
                    "profile",
                    "queries",
                    "mean",
                    "std",
                    "min",
                    "p50",
                    "p90",
                    "p95",
                    "p99",
                    "max",
                    "fp32 compute bound",
                ],
                lrows,
            )
        )
    return blocks


REFERENCE_HEADERS = [
    "artifact",
    "precision",
    "shipped converter",
    "shipped ms",
    "best candidate",
    "best ms",
    "shipped / best",
    "all candidates",
    "bench p50 ms",
]


def converter_reference_blocks(rep: dict) -> list[Block]:
    """The reference row of each shipped TFLite artifact: its converter's latency beside the best candidate the
    toolchain built (both timed interleaved in the export stage; export/candidates.py), goal <= 1.02x."""
    ref = rep.get("converter_reference") or []
    if not ref:
        return []
    rows = []
    for r in ref:
        cands = ", ".join(
            f"{c['converter']} {ms(c.get('latency_ms'))}" + ("" if c.get("status") == "passed" else f" ({c['status']})")
            for c in r.get("candidates") or []
        )
        ratio = r.get("shipped_over_best")
        rows.append(
            [
                r.get("name") or "?",
                r.get("precision") or "—",
                r.get("shipped") or "—",
                ms(r.get("shipped_ms")),
                r.get("fastest_built") or "—",
                ms(r.get("fastest_built_ms")),
                "—" if ratio is None else f"{ratio:.2f}x",
                cands,
                ms(r.get("bench_p50_ms")),
            ]
        )
    timed = next((r.get("timed_on") for r in ref if r.get("timed_on")), None)
    return [
        ("h3", "Converter reference (shipped file vs the best candidate)"),
        ("table", REFERENCE_HEADERS, rows),
        (
            "p",
            "Each TFLite float artifact is built by every configured converter (export.tflite_converters), "
            "checked with the artifact's parity gate and timed in the export stage"
            + (f" ({timed})" if timed else "")
            + "; the fastest that passes ships. Best candidate = fastest file built, whatever its parity. "
            "Goal: shipped / best <= 1.02x. The bench p50 is this stage's own measurement of the shipped file.",
        ),
    ]


def int8_methods_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """How each int8 artifact was made (export stage)."""
    made = [
        f"{r['name']}: {r['int8_method']}"
        for r in (rep.get("exports") or {}).get("artifacts", [])
        if r.get("int8_method")
    ]
    if not made:
        return []
    return [("h3", "How the int8 artifacts were made"), ("list", made)]


def goals_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    goals = rep.get("goals") or []
    if not goals:
        return [("h2", "Goals"), ("p", "No goals evaluated yet (they come with the benchmark).")]
    return [
        ("h2", "Goals"),
        (
            "table",
            ["goal", "target", "value", "status", "detail"],
            [
                [g["name"], g["target"], "—" if g["value"] is None else f"{g['value']:g}x", g["status"], g["detail"]]
                for g in goals
            ],
        ),
        (
            "p",
            "Goals are reported, not enforced. The compute bound assumes every multiply-accumulate "
            "runs as one lane of a fused multiply-add at the clock shown under Machine; memory "
            "traffic, depthwise convolutions and framework overhead are ignored, so small models sit "
            "well above it.",
        ),
    ]


def plots_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """The figures that have data (added to `figures` as PNG bytes by name)."""
    from edgekd.benchmarks import plots

    t, s = rep.get("teacher"), rep.get("student")
    blocks: list[Block] = [("h2", "Plots")]
    fig_specs = []
    if "artifacts" in rep:
        entries, prof = _references(rep) + (rep.get("artifacts") or []), _first_profile(rep)
        fig_specs.append(("pareto", plots.pareto(entries, prof), "Accuracy vs latency (Pareto front)"))
        fig_specs.append(("size_memory", plots.size_memory(entries, prof), "File size and peak memory"))
    classes = (rep.get("data") or {}).get("classes") or list(((t or {}).get("per_class_recall") or {}).keys())
    fig_specs.append(
        (
            "confusion",
            plots.confusion(
                {k: (r or {}).get("confusion_matrix") for k, r in (("teacher", t), ("student (KD)", s))}, classes
            ),
            "Confusion matrices on the test split (rows: true class; colour: row share)",
        )
    )
    fig_specs.append(
        (
            "training_curves",
            plots.training_curves(_histories(run)),
            "Training curves: KD student vs hard-label baseline",
        )
    )
    for name, png, caption in fig_specs:
        if png:
            figures[name] = png
            blocks.append(("img", name, caption))
    if len(blocks) == 1:
        blocks.append(("p", "No data to plot yet."))
    return blocks


def gates_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """The distillation gates, then each artifact's export parity (once per artifact)."""
    gate_items = [
        f"{'PASS' if g.get('passed') else 'FAIL'} {g.get('name')}: {g.get('message')}" for g in rep.get("gates") or []
    ]
    seen = set()
    for e in rep.get("artifacts") or []:
        if e["name"] in seen:
            continue
        seen.add(e["name"])
        ps = e.get("parity_status")
        detail = _parity_detail(e.get("parity"))
        word = {"passed": "PASS", "failed": "FAIL"}.get(ps or "", (ps or "NO PARITY").upper())
        gate_items.append(f"{word} parity {e['name']}" + (f": {detail}" if detail else ""))
    return [("h2", "Gates"), ("list", gate_items) if gate_items else ("p", "No gates recorded.")]


def artifact_class_recall(run: RunDir) -> list[tuple[str, dict[str, Optional[float]], Optional[int]]]:
    """(artifact, {class: recall}, images) of every exported artifact whose parity check recorded per-class
    recall (exports manifest), manifest order."""
    from edgekd.export.manifest import manifest_path, read_manifest
    from edgekd.pipeline.errors import EdgekdError

    if not manifest_path(run.root).exists():
        return []
    try:
        manifest = read_manifest(run.root)
    except EdgekdError:
        return []
    labels = manifest.get("labels") or []
    out = []
    for a in manifest["artifacts"]:
        p = a.get("parity") or {}
        rec = p.get("per_class_recall")
        if rec and len(rec) == len(labels):
            out.append(
                (
                    f"{a['name']}" + ("" if a.get("status") == "ok" else f" ({a.get('status')})"),
                    dict(zip(labels, rec)),
                    p.get("images"),
                )
            )
    return out


def per_class_recall_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """Recall per class of teacher, student, baseline (evaluate stage) and every artifact (its parity check)."""
    t, s, b = rep.get("teacher"), rep.get("student"), rep.get("baseline")
    if not (t and s and t.get("per_class_recall")):
        return []
    arts = artifact_class_recall(run)
    rows = [
        [
            c,
            pct(t["per_class_recall"].get(c)),
            pct(s.get("per_class_recall", {}).get(c)),
            pct((b or {}).get("per_class_recall", {}).get(c)),
        ]
        + [pct(r.get(c)) for _, r, _ in arts]
        for c in t["per_class_recall"]
    ]
    blocks: list[Block] = [
        ("h2", "Per-class recall"),
        ("table", ["class", "teacher", "student", "baseline"] + [name for name, _, _ in arts], rows),
    ]
    if arts:
        gate = (rep.get("config") or {}).get("gate", {}).get("max_class_recall_drop")
        n = sorted({i for _, _, i in arts if i is not None})
        blocks.append(
            (
                "p",
                "Artifacts: each in its own runtime on the images of its parity check "
                f"({', '.join(str(i) for i in n)} test images). "
                + (
                    f"Gate: no shipped artifact loses more than {gate:g} points (and more than one image) of recall "
                    "on any class against the float student (`gate.max_class_recall_drop`)."
                    if gate is not None
                    else "The per-class recall gate is off (`gate.max_class_recall_drop: null`)."
                ),
            )
        )
    return blocks


def _first_20(items: list) -> list[str]:
    return [_short(x) for x in items[:20]] + ([f"... {len(items) - 20} more"] if len(items) > 20 else [])


def data_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """The data report: source, imbalance, split counts, unreadable files, cross-split duplicates."""
    d = rep.get("data") or {}
    if not d:
        return [("h2", "Data"), ("p", "No data report.")]
    items = [
        f"source: {d.get('source')}, {d.get('num_images')} images, {len(d.get('classes') or [])} classes",
        f"class imbalance: {d.get('imbalance_ratio')}x (largest / smallest class); majority class is "
        f"{pct(d.get('majority_class_share_test'))} of test (accuracy of always guessing it)",
    ]
    sc = d.get("split_counts") or {}
    if sc:
        items.append(
            "split: " + ", ".join(f"{k} {sum(v.values()) if isinstance(v, dict) else v}" for k, v in sc.items())
        )
    skipped = d.get("skipped") or []
    dups = d.get("cross_split_duplicates") or []
    items.append(f"skipped (unreadable) files: {len(skipped)}")
    items.append(f"leakage: {len(dups)} image(s) identical across splits")
    blocks: list[Block] = [("h2", "Data"), ("list", items)]
    if sc:
        cls = list(d.get("class_counts") or next(iter(sc.values()), {}) or {})
        blocks.append(("table", ["class"] + list(sc), [[c] + [str((sc[k] or {}).get(c, 0)) for k in sc] for c in cls]))
    if skipped:
        blocks += [("h3", "Skipped files"), ("list", _first_20(skipped))]
    if dups:
        blocks += [("h3", "Cross-split duplicates (leakage)"), ("list", _first_20(dups))]
    return blocks


def machine_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    """The machine (bench stage's if measured, else the evaluate stage's), thread profiles, peaks, MACs."""
    m = rep.get("bench_machine") or rep.get("machine") or {}
    if not m:
        return [("h2", "Machine"), ("p", "Not recorded.")]
    items = [
        f"CPU: {m.get('cpu')}, {m.get('cores')} logical cores"
        + (f" ({m.get('cores_available')} available to this process)" if m.get("cores_available") else ""),
        f"platform: {m.get('platform')}, Python {m.get('python')}",
    ]
    if m.get("clock_ghz"):
        items.append(f"clock {m['clock_ghz']} GHz ({m.get('clock_source')}), SIMD {m.get('simd')}")
    if m.get("cpu_flags") is not None:
        dot = [f for f in m["cpu_flags"] if f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")]
        items.append(
            f"CPU flags: {' '.join(m['cpu_flags']) or 'none of those that matter'}"
            + (f" (int8 dot product: {' '.join(dot)})" if dot else " (no int8 dot-product instructions)")
        )
    if m.get("runtimes"):
        items.append("runtimes: " + ", ".join(f"{k} {v}" for k, v in m["runtimes"].items() if v))
    ort_opts = (m.get("runtime_options") or {}).get("onnxruntime")
    if ort_opts:
        items.append(
            f"onnxruntime: {', '.join(ort_opts.get('providers') or [])} "
            f"(available: {', '.join(ort_opts.get('available_providers') or []) or '?'}), "
            f"{ort_opts.get('graph_optimization_level')}, {ort_opts.get('execution_mode')}, "
            f"inter-op threads {ort_opts.get('inter_op_num_threads')}, session config "
            + (", ".join(f"{k}={v}" for k, v in (ort_opts.get("session_config") or {}).items()) or "default")
        )
    for p in m.get("profiles") or []:
        peak = (m.get("compute_peak") or {}).get(p["profile"], {})
        items.append(
            f"profile {p['profile']}: {p['threads_requested']} thread(s) requested, {p['threads']} used "
            f"on CPU(s) {p['cpus']}"
            + (" pinned with sched_setaffinity" if p.get("pinned") else " (not pinned: the OS does not allow it)")
            + (f"; fp32 peak {peak.get('peak_gmacs_per_s')} GMAC/s" if peak.get("peak_gmacs_per_s") else "")
        )
    if m.get("macs"):
        items.append(
            "MACs per image (Conv2d + Linear, batch 1): "
            + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in m["macs"].items() if v)
        )
    if m.get("date"):
        items.append(f"measured {m['date']}")
    blocks: list[Block] = [("h2", "Machine"), ("list", items)]
    peak = next(iter((m.get("compute_peak") or {}).values()), None)
    if peak and peak.get("assumption"):
        blocks.append(("p", f"Compute-peak assumption: {peak['assumption']}."))
    return blocks


def stage_times_section(run: RunDir, rep: dict, figures: dict[str, bytes]) -> list[Block]:
    stages = rep.get("stages") or {}
    if not stages:
        return []
    return [("h2", "Stage wall times (s)"), ("list", [f"{k}: {v}" for k, v in stages.items()])]


# The report, top to bottom: each section reads report.json (and the run directory) and says when it has no data.
SECTIONS = (
    summary_section,
    models_section,
    verdict_section,
    per_class_recall_section,
    benchmark_section,
    int8_methods_section,
    goals_section,
    plots_section,
    gates_section,
    data_section,
    machine_section,
    stage_times_section,
)


def build(run: RunDir, rep: dict) -> tuple[list[Block], dict[str, bytes]]:
    """The report's blocks and its figures (PNG bytes by name)."""
    blocks: list[Block] = []
    figures: dict[str, bytes] = {}
    for section in SECTIONS:
        blocks += section(run, rep, figures)
    return blocks, figures


PARITY_KEYS = (
    "agreement",
    "top1_agreement",
    "max_abs",
    "max_abs_diff",
    "cosine",
    "accuracy_drop_points",
    "images",
    "reason",
    "message",
)


def _parity_detail(p: Any) -> str:
    if not isinstance(p, dict):
        return ""
    parts = []
    keys = [k for k in PARITY_KEYS if k in p] or list(p)
    for k in keys:
        v = p[k]
        if k == "status" or isinstance(v, (dict, list)):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(parts)


def _short(x: Any) -> str:
    if isinstance(x, dict):
        return ", ".join(f"{k}: {v}" for k, v in x.items())[:300]
    return str(x)[:300]


# ----------------------------------------------------------------------------------------
# markdown and HTML writers


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], fig_dir: str = "report_files") -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "strong":
            out += [f"**{b[1]}**", ""]
        elif kind == "list":
            out += [f"- {x}" for x in b[1]] + [""]
        elif kind == "table":
            headers, rows = b[1], b[2]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{b[2]}]({fig_dir}/{b[1]}.png)", "", f"*{b[2]}*", ""]
        elif kind == "code":
            out += ["```", b[1], "```", ""]
    return "\n".join(out).rstrip() + "\n"


_INLINE_CODE = re.compile(r"`([^`]+)`")


def _inline(s: str) -> str:
    return _INLINE_CODE.sub(r"<code>\1</code>", html.escape(str(s), quote=False))


CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;white-space:nowrap}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}.headline{font-size:1.15em;background:#eef6ee;padding:.6em;
border-left:4px solid #3a3}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
td.ok,td.passed,td.met,td.PASS{color:#185}td.failed,td.FAIL,td.timeout{color:#b22;font-weight:bold}
td.skipped,td.unknown{color:#a70}code{background:#f3f3f3;padding:0 .2em}
"""


def to_html(blocks: list[Block], figures: dict[str, bytes], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "strong":
            out.append(f'<p class="headline"><strong>{_inline(b[1])}</strong></p>')
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            headers, rows = b[1], b[2]
            out.append(
                "<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr></thead><tbody>"
            )
            for r in rows:
                cells = []
                for c in r:
                    cls = (
                        str(c).split(" ")[0]
                        if str(c).split(" ")[0] in ("ok", "failed", "skipped", "timeout", "passed", "met", "unknown")
                        else ""
                    )
                    if str(c) == "not met":
                        cls = "failed"
                    cells.append(f'<td class="{cls}">{_inline(c)}</td>' if cls else f"<td>{_inline(c)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif kind == "img":
            png = figures.get(b[1])
            if png:
                data = base64.b64encode(png).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(b[2])}</figcaption></figure>"
                )
        elif kind == "code":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render(run: RunDir) -> tuple[Path, Path]:
    """Write RUN_DIR/report.md (+ report_files/*.png) and a self-contained RUN_DIR/report.html."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    rep = load_report(run)
    blocks, figures = build(run, rep)
    fig_dir = run.path("report_files")
    for name, png in figures.items():
        atomic_write_bytes(fig_dir / f"{name}.png", png)
    for name in FIGURES:  # a figure that has no data any more must not linger beside the report
        if name not in figures:
            (fig_dir / f"{name}.png").unlink(missing_ok=True)
    md = run.path("report.md")
    htm = run.path("report.html")
    atomic_write_bytes(md, to_markdown(blocks).encode())
    title = blocks[0][1] if blocks and blocks[0][0] == "h1" else "edgekd report"
    atomic_write_bytes(htm, to_html(blocks, figures, title).encode())
    return md, htm
