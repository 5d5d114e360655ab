"""report.json (for programs) and report.md (for people): the distillation part.

Later stages (export, bench) add their sections to the same report.json through `update_report`;
benchmarks/report.py renders the full report.md/html from it.
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.rundir import RunDir, atomic_write_bytes, atomic_write_json, read_json


def load_report(run: RunDir) -> dict:
    return read_json(run.report_json) if run.report_json.exists() else {}


def update_report(run: RunDir, **sections: Any) -> dict:
    rep = load_report(run)
    rep.update(sections)
    rep["stages"] = {k: v.get("seconds") for k, v in run.stages().items()}
    atomic_write_json(run.report_json, rep)
    return rep


def write_core_report(cfg, run: RunDir) -> dict:
    from pipeline.stages import machine_info

    m = read_json(run.metrics)
    data = read_json(run.data_report) if run.data_report.exists() else {}
    rep = update_report(run, edgekd_version=__version__, run_dir=str(run.root),
                        teacher=m["teacher"], student=m["student"], baseline=m["baseline"],
                        kd_gain_points=m["kd_gain_points"], gates=m["gates"], data=data,
                        config=cfg.model_dump(mode="json"), machine=machine_info())
    atomic_write_bytes(run.path("report.md"), render_core_md(rep).encode())
    return rep


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def render_core_md(rep: dict) -> str:
    t, s, b = rep["teacher"], rep["student"], rep["baseline"]
    drop = (t["accuracy"] - s["accuracy"]) * 100
    lines = [
        f"# edgekd run: {rep['config']['name']} ({rep['config']['preset']} preset)",
        "",
        f"**Distilled student {s['arch']}: {_pct(s['accuracy'])} vs teacher {t['arch']} {_pct(t['accuracy'])} "
        f"({-drop:+.1f} pts); hard-label baseline {_pct(b['accuracy'])} (KD {rep['kd_gain_points']:+.1f} pts).**",
        "",
        "| model | arch | params | accuracy | macro-F1 | ECE | agreement with teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("teacher", t), ("student (KD)", s), ("baseline (hard labels)", b)):
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "—"
        lines.append(f"| {name} | {r['arch']} | {params} | {_pct(r['accuracy'])} | {r['macro_f1']:.3f} | "
                     f"{r['ece']:.3f} | {_pct(r.get('agreement_teacher'))} |")
    lines += ["", "## Gates", ""]
    for g in rep.get("gates", []):
        lines.append(f"- {'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['message']}")
    lines += ["", "## Per-class recall", "", "| class | teacher | student | baseline |", "|---|---|---|---|"]
    for c in t["per_class_recall"]:
        lines.append(f"| {c} | {_pct(t['per_class_recall'][c])} | {_pct(s['per_class_recall'][c])} | "
                     f"{_pct(b['per_class_recall'][c])} |")
    d = rep.get("data") or {}
    if d:
        lines += ["", "## Data", "", f"- source: {d.get('source')}, {d.get('num_images')} images, "
                  f"imbalance {d.get('imbalance_ratio')}x, majority class {_pct(d.get('majority_class_share_test'))} of test",
                  f"- skipped files: {len(d.get('skipped', []))}; cross-split duplicates: "
                  f"{len(d.get('cross_split_duplicates', []))}"]
    lines += ["", "## Stage wall times (s)", ""] + [f"- {k}: {v}" for k, v in rep.get("stages", {}).items()]
    return "\n".join(lines) + "\n"
