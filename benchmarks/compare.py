"""Two runs side by side (`edgekd bench RUN_A --compare RUN_B`) and results files to keep
(`--save-results NAME` -> benchmarks/results/NAME.md)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Optional

from edgekd.benchmarks.report import MEASUREMENT_HEADERS, measurement_rows, pct, to_markdown
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.report import load_report
from edgekd.pipeline.rundir import RunDir, atomic_write_bytes, atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(out: Path, doc: dict, markdown: str) -> None:
    """OUT.json (for programs) and OUT.md (for people) of a benchmark script, each written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(f"{out}.json"), (json.dumps(doc, indent=1) + "\n").encode())
    atomic_write_bytes(Path(f"{out}.md"), markdown.encode())


def _load(run_dir: str | Path) -> tuple[RunDir, dict]:
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise EdgekdError(f"run directory not found: {run.root}")
    rep = load_report(run)
    if not rep:
        raise EdgekdError(f"{run.root} has no report.json; run `edgekd run --out {run.root}` first")
    return run, rep


def _measurements(rep: dict) -> dict[str, dict]:
    out = {}
    for e in (rep.get("teacher_bench") or []) + (rep.get("student_bench") or []) + (rep.get("artifacts") or []):
        key = f"{e.get('name')} [{e.get('profile')}]" if e.get("profile") else str(e.get("name"))
        out[key] = e
    return out


def _fmt(v: Optional[float], kind: str) -> str:
    if v is None:
        return "—"
    return {
        "pct": lambda x: f"{x * 100:.1f}%",
        "ms": lambda x: f"{x:.3f}",
        "mb": lambda x: f"{x / 1e6:.2f}",
        "pts": lambda x: f"{x:+.1f}",
        "x": lambda x: f"{x:g}x",
        "n": lambda x: f"{x:.0f}",
    }[kind](v)


def _delta(a: Optional[float], b: Optional[float], kind: str) -> str:
    if a is None or b is None:
        return "—"
    if kind in ("ms", "mb", "n") and a:
        return f"{(b - a) / a * 100:+.0f}%"
    if kind == "pct":
        return f"{(b - a) * 100:+.1f} pts"
    return f"{b - a:+.2f}"


def compare_rows(ra: dict, rb: dict) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(label: str, a, b, kind: str) -> None:
        rows.append([label, _fmt(a, kind), _fmt(b, kind), _delta(a, b, kind)])

    for k in ("teacher", "student", "baseline"):
        add(f"{k} accuracy (PyTorch)", (ra.get(k) or {}).get("accuracy"), (rb.get(k) or {}).get("accuracy"), "pct")
    add("KD gain (pts)", ra.get("kd_gain_points"), rb.get("kd_gain_points"), "pts")
    ga = {g["name"]: g for g in ra.get("goals") or []}
    gb = {g["name"]: g for g in rb.get("goals") or []}
    for name in list(dict.fromkeys([*ga, *gb])):
        add(
            f"goal {name} ({(ga.get(name) or gb.get(name))['target']})",
            (ga.get(name) or {}).get("value"),
            (gb.get(name) or {}).get("value"),
            "x",
        )
    return rows


MEASUREMENT_COMPARE_HEADERS = [
    "measurement",
    "accuracy A",
    "accuracy B",
    "p50 ms A",
    "p50 ms B",
    "Δ p50",
    "size MB A",
    "size MB B",
    "peak RSS MB A",
    "peak RSS MB B",
    "status A",
    "status B",
]


def compare_measurement_rows(ra: dict, rb: dict) -> list[list[str]]:
    """One row per artifact and profile found in either run."""
    ma, mb_ = _measurements(ra), _measurements(rb)
    rows = []
    for key in list(dict.fromkeys([*ma, *mb_])):
        a, b = ma.get(key) or {}, mb_.get(key) or {}
        pa, pb = (a.get("latency_ms") or {}).get("p50"), (b.get("latency_ms") or {}).get("p50")
        rows.append(
            [
                key,
                _fmt(a.get("accuracy"), "pct"),
                _fmt(b.get("accuracy"), "pct"),
                _fmt(pa, "ms"),
                _fmt(pb, "ms"),
                _delta(pa, pb, "ms"),
                _fmt(a.get("size_bytes"), "mb"),
                _fmt(b.get("size_bytes"), "mb"),
                _fmt(a.get("peak_rss_mb"), "n"),
                _fmt(b.get("peak_rss_mb"), "n"),
                a.get("status") or "absent",
                b.get("status") or "absent",
            ]
        )
    return rows


def compare(run_a: str | Path, run_b: str | Path, out: Optional[Path] = None) -> tuple[str, Path]:
    """Markdown comparing two runs; written to `out` (default RUN_A/compare-<B>.md). Returns (text, path)."""
    a, ra = _load(run_a)
    b, rb = _load(run_b)
    na, nb = a.root.name or str(a.root), b.root.name or str(b.root)
    if na == nb:
        na, nb = str(a.root), str(b.root)
    blocks = [
        ("h1", f"edgekd: {na} vs {nb}"),
        (
            "p",
            f"A = {a.root} ({(ra.get('config') or {}).get('preset', '?')} preset), "
            f"B = {b.root} ({(rb.get('config') or {}).get('preset', '?')} preset). "
            "Δ is B relative to A; latencies from two runs compare only on one machine.",
        ),
        ("table", ["metric", na, nb, "Δ (B vs A)"], compare_rows(ra, rb)),
    ]
    mrows = compare_measurement_rows(ra, rb)
    if mrows:
        blocks += [
            ("h2", "Measurements (A = " + na + ", B = " + nb + ")"),
            ("table", MEASUREMENT_COMPARE_HEADERS, mrows),
        ]
    for label, r in (("A", ra), ("B", rb)):
        if r.get("headline"):
            blocks.append(("p", f"{label}: {r['headline']}"))
    text = to_markdown(blocks)
    out = Path(out) if out else a.path(f"compare-{re.sub(r'[^A-Za-z0-9._-]+', '_', nb)}.md")
    atomic_write_bytes(out, text.encode())
    return text, out


def save_results(
    run: RunDir, name: str, command: str, comparison: Optional[str] = None, results_dir: Path = RESULTS_DIR
) -> Path:
    """benchmarks/results/<name>.md (command, machine, date, headline, KD verdict, table, goals) and
    <name>.json beside it: the run's report.json without its per-image arrays, plus the command."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name):
        raise EdgekdError(f"--save-results name {name!r}: use letters, digits, '.', '_' or '-'")
    rep = load_report(run)
    m = rep.get("bench_machine") or rep.get("machine") or {}
    blocks = [
        ("h1", f"edgekd benchmark: {name}"),
        (
            "list",
            [
                f"command: `{command}`",
                f"date: {m.get('date') or time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
                f"machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('cores_available', '?')} available), "
                f"{m.get('platform')}",
                "runtimes: " + ", ".join(f"{k} {v}" for k, v in (m.get("runtimes") or {}).items() if v),
                f"run: {run.root} ({(rep.get('config') or {}).get('preset', '?')} preset)",
            ],
        ),
    ]
    if rep.get("headline"):
        blocks.append(("strong", rep["headline"]))
    t, s = rep.get("teacher") or {}, rep.get("student") or {}
    if t and s:
        b = rep.get("baseline") or {}
        blocks.append(
            (
                "p",
                f"PyTorch test accuracy: teacher {t.get('arch')} {pct(t.get('accuracy'))} (macro-F1 "
                f"{_f1(t)}), student {s.get('arch')} {pct(s.get('accuracy'))} (macro-F1 {_f1(s)}), baseline "
                f"{pct(b.get('accuracy'))} (macro-F1 {_f1(b)}).",
            )
        )
    v = rep.get("kd_verdict")
    if v:
        lo, hi = v["kd_gain_ci95"]
        blocks.append(
            (
                "p",
                f"KD verdict over {v['seeds']} seed(s): gain {v['kd_gain_mean']:+.2f} ± {v['kd_gain_std']:.2f} points, "
                f"95% interval [{lo:+.2f}, {hi:+.2f}], McNemar p = {v['mcnemar_p']:.3g}: {v['conclusion']}.",
            )
        )
    entries = (rep.get("teacher_bench") or []) + (rep.get("student_bench") or []) + (rep.get("artifacts") or [])
    if entries:
        blocks.append(("table", MEASUREMENT_HEADERS, measurement_rows(entries)))
    else:
        blocks.append(("p", "No measurements in this run."))
    goals = rep.get("goals") or []
    if goals:
        blocks.append(("h2", "Goals"))
        blocks.append(
            (
                "table",
                ["goal", "target", "value", "status", "detail"],
                [
                    [
                        g["name"],
                        g["target"],
                        "—" if g["value"] is None else f"{g['value']:g}x",
                        g["status"],
                        g["detail"],
                    ]
                    for g in goals
                ],
            )
        )
    text = to_markdown(blocks)
    if comparison:
        text += "\n" + comparison.replace("# edgekd:", "## Comparison:", 1)
    path = results_dir / f"{name}.md"
    atomic_write_bytes(path, text.encode())
    atomic_write_json(results_dir / f"{name}.json", {"command": command, **results_json(rep)})
    return path


# per-image or per-pair arrays: large, and reproducible from the run directory
_BULKY = ("confusion_matrix", "per_seed_logits")


def results_json(rep: dict) -> dict:
    """report.json for committing: everything but bulky per-model arrays."""

    def slim(m):
        return {k: v for k, v in m.items() if k not in _BULKY} if isinstance(m, dict) else m

    return {k: slim(v) if k in ("teacher", "student", "baseline") else v for k, v in rep.items()}


def _f1(m: dict) -> str:
    return "–" if m.get("macro_f1") is None else f"{m['macro_f1']:.2f}"
