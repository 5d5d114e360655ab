"""report.json (for programs): the distillation part, and the shared `update_report`.

Later stages (export, bench) add their sections to the same report.json through `update_report`;
benchmarks/report.py renders report.md/html (for people) from whatever report.json holds.
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.rundir import RunDir, atomic_write_json, read_json


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
    from benchmarks.report import render

    render(run)  # report.md + report.html; the bench stage re-renders them with its measurements
    return rep
