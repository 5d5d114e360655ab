"""report.json (for programs): the distillation part, and the shared `update_report`.

Later stages (export, bench) add their sections to the same report.json through `update_report`;
edgekd.benchmarks.report renders report.md/html (for people) from whatever report.json holds; the stage
runner (edgekd.stage_table) calls it after the stages, so this package never imports the one above it.
"""

from __future__ import annotations

from typing import Any

from edgekd.pipeline import __version__, machine
from edgekd.pipeline.rundir import RunDir, atomic_write_json, read_json


def load_report(run: RunDir) -> dict:
    return read_json(run.report_json) if run.report_json.exists() else {}


def update_report(run: RunDir, **sections: Any) -> dict:
    rep = load_report(run)
    rep.update(sections)
    rep["stages"] = {k: v.get("seconds") for k, v in run.stages().items()}
    atomic_write_json(run.report_json, rep)
    return rep


def write_core_report(cfg, run: RunDir) -> dict:
    m = read_json(run.metrics)
    data = read_json(run.data_report) if run.data_report.exists() else {}
    rep = update_report(
        run,
        edgekd_version=__version__,
        run_dir=str(run.root),
        teacher=m["teacher"],
        student=m["student"],
        baseline=m["baseline"],
        kd_gain_points=m["kd_gain_points"],
        kd_verdict=m.get("kd_verdict"),
        advice=m.get("advice", []),
        fidelity_advice=m.get("fidelity_advice", []),
        coverage=m.get("coverage"),
        gates=m["gates"],
        data=data,
        config=cfg.model_dump(mode="json"),
        machine=machine.describe(),
    )
    return rep
