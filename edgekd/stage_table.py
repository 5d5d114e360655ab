"""The stage table: every stage of `edgekd run`, in order, with what it reads and writes in the run directory.

A stage is a function (StageContext) -> None from one package; this table is the only module that knows all
of them, so it sits on top with the command line. `run_stages` walks the table: rank 0 alone runs the stages
marked `main_only`, a failed quality gate is remembered and raised after the remaining stages wrote their
results, and the reports are re-rendered once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from edgekd.pipeline import distributed as dist_
from edgekd.pipeline import stages as st
from edgekd.pipeline.config import ALL_STAGES, Config
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import GateFailed
from edgekd.pipeline.progress import log
from edgekd.pipeline.report import update_report
from edgekd.pipeline.rundir import RunDir


@dataclass(frozen=True)
class StageContext:
    cfg: Config
    run: RunDir
    resume: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[StageContext], None]
    reads: tuple[str, ...]  # run-directory paths (relative) the stage needs
    writes: tuple[str, ...]  # what it leaves there
    main_only: bool = False  # rank 0 alone (evaluation, export, bench); training stages run on every rank


def _data(c: StageContext) -> None:
    st.stage_data(c.cfg, c.run)


def _teacher(c: StageContext) -> None:
    st.stage_teacher(c.cfg, c.run, load_split(c.run), resume=c.resume)


def _soft_labels(c: StageContext) -> None:
    st.stage_soft_labels(c.cfg, c.run, load_split(c.run))


def _student(kind: str) -> Callable[[StageContext], None]:
    def fn(c: StageContext) -> None:
        st.stage_students(c.cfg, c.run, load_split(c.run), kind, resume=c.resume)  # train.seeds trainings

    return fn


def _evaluate(c: StageContext) -> None:
    st.stage_evaluate(c.cfg, c.run, load_split(c.run))
    st.check_gates(c.run)


def _export(c: StageContext) -> None:
    from edgekd.export.api import run_export  # converters import TensorFlow & co.: only when exporting

    run_export(c.run, c.cfg)


def _bench(c: StageContext) -> None:
    from edgekd.benchmarks.api import run_bench

    run_bench(c.run, c.cfg)


STAGES: tuple[Stage, ...] = (
    Stage("data", _data, (), ("data/split.json", "data/report.json")),
    Stage("teacher", _teacher, ("data/split.json",), ("teacher/model.safetensors", "teacher/meta.json")),
    Stage("soft_labels", _soft_labels, ("data/split.json", "teacher/meta.json"), ("soft_labels/<fp>/shard-*",)),
    Stage(
        "student",
        _student("student"),
        ("data/split.json", "teacher/meta.json", "soft_labels/<fp>/shard-*"),
        ("student/model.safetensors", "student/meta.json", "student/history.json", "seeds/<i>/student/"),
    ),
    Stage(
        "baseline",
        _student("baseline"),
        ("data/split.json",),
        ("baseline/model.safetensors", "baseline/meta.json", "baseline/history.json", "seeds/<i>/baseline/"),
    ),
    Stage(
        "evaluate",
        _evaluate,
        ("data/split.json", "teacher/", "student/", "baseline/", "seeds/"),
        ("eval/metrics.json", "eval/logits.npz", "report.json"),
        main_only=True,
    ),
    Stage(
        "export",
        _export,
        ("student/model.safetensors", "eval/logits.npz", "data/split.json"),
        ("exports/<artifact>/", "exports/manifest.json", "report.json"),
        main_only=True,
    ),
    Stage(
        "bench",
        _bench,
        ("exports/manifest.json", "eval/logits.npz", "teacher/"),
        ("bench/", "report.json"),
        main_only=True,
    ),
)
assert tuple(s.name for s in STAGES) == ALL_STAGES, "the stage table and config.ALL_STAGES disagree"

TEACHER_USERS = ("soft_labels", "student", "evaluate")
# `edgekd teacher|distill|evaluate RUN_DIR` run these groups of the table.
STAGE_GROUPS = {"teacher": ["teacher"], "distill": ["soft_labels", "student", "baseline"], "evaluate": ["evaluate"]}


def run_stages(cfg: Config, run: RunDir, names: list[str], resume: bool = False) -> None:
    """Run the named stages in table order; raise the first GateFailed once all of them have run."""
    from edgekd.benchmarks.report import render

    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    dist_.init_from_env()
    t_all = time.time()
    ctx = StageContext(cfg, run, resume)
    gate_error: Optional[GateFailed] = None
    teacher_checked = False
    for stage in (s for s in STAGES if s.name in names):
        if stage.main_only and not dist_.is_main():
            continue
        if stage.name in TEACHER_USERS and "teacher" not in names and not teacher_checked:
            st.check_teacher_current(cfg, run, load_split(run))  # never build on a teacher from other settings
            teacher_checked = True
        try:
            stage.fn(ctx)
        except GateFailed as e:  # finish the remaining stages so every result is on disk, then fail
            gate_error = gate_error or e
    if not dist_.is_main():
        return
    if run.report_json.exists():
        update_report(run)  # stage timings
        render(run)  # report.md / report.html from whatever report.json holds now
        log(f"done in {time.time() - t_all:.0f}s: {run.root / 'report.md'}")
    if gate_error:
        raise gate_error
