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
from edgekd.pipeline import tracking
from edgekd.pipeline.config import ALL_STAGES, Config
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import EdgekdError, GateFailed
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
    Stage("soft_labels", _soft_labels, ("data/split.json", "teacher/meta.json"), ("soft_labels/<fp>/chunk-*",)),
    Stage(
        "student",
        _student("student"),
        ("data/split.json", "teacher/meta.json", "soft_labels/<fp>/chunk-*"),
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


RESUMABLE = {  # stage -> run-directory globs of the checkpoints its trainings resume from
    "teacher": ("teacher/checkpoint.pt",),
    "student": ("student/checkpoint.pt", "student/auto/*/checkpoint.pt", "seeds/*/student/checkpoint.pt"),
    "baseline": ("baseline/checkpoint.pt", "seeds/*/baseline/checkpoint.pt"),
}


def check_checkpoints(run: RunDir, names: list[str]) -> None:
    """--resume: every checkpoint a named stage would resume from must load (a truncated file from a killed
    write, a disk error) before any stage starts; EdgekdError names the file and the fix otherwise."""
    import torch

    for name in names:
        for pattern in RESUMABLE.get(name, ()):
            for ck in sorted(run.root.glob(pattern)):
                try:
                    torch.load(ck, map_location="cpu", weights_only=True)
                except Exception as e:  # truncated zip, unpickling error, EOF: all mean "unusable"
                    why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                    raise EdgekdError(
                        f"checkpoint {ck} cannot be read ({why}); delete it to restart that training from its "
                        "first epoch, or rerun without --resume"
                    ) from None


def run_stages(cfg: Config, run: RunDir, names: list[str], resume: bool = False) -> None:
    """Run the named stages in table order; raise the first GateFailed once all of them have run."""
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    if resume and dist_.is_main():
        check_checkpoints(run, names)
    dist_.init_from_env()
    t_all = time.time()
    ctx = StageContext(cfg, run, resume)
    gate_error: Optional[GateFailed] = None
    teacher_checked = False
    # TensorBoard / MLflow (cfg.track) on rank 0: train_model's epochs while the stages run, the results after
    with tracking.session(cfg, run, enabled=dist_.is_main()) as tracker:
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
            finish_reports(run, cfg)
            log(f"done in {time.time() - t_all:.0f}s: {run.root / 'report.md'}")
        tracker.finish(run, str(gate_error) if gate_error else None)
    if gate_error:
        raise gate_error


def finish_reports(run: RunDir, cfg: Optional[Config] = None) -> None:
    """report.md / report.html from whatever report.json holds now, then the model card (RUN_DIR/MODEL_CARD.md,
    model_card.json, copied beside the exports manifest and into every artifact folder)."""
    from edgekd.benchmarks.model_card import write_model_card
    from edgekd.benchmarks.report import render

    render(run)
    write_model_card(run, cfg)


def _standalone(cfg: Config, run: RunDir, fn: Callable[[], object]) -> object:
    """One stage outside `run_stages` (`edgekd export|bench RUN_DIR`, Run.export() / Run.bench()): tracking,
    then the reports and the model card, also when a gate failed."""
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    with tracking.session(cfg, run) as tracker:
        try:
            out = fn()
        except GateFailed as e:
            if run.report_json.exists():
                finish_reports(run, cfg)
            tracker.finish(run, str(e))
            raise
        if run.report_json.exists():
            finish_reports(run, cfg)
        tracker.finish(run)
    return out


def export_stage(cfg: Config, run: RunDir, formats: Optional[list[str]] = None) -> dict:
    """Export now (`formats`, default cfg.export.formats) even when up to date; returns the manifest."""
    from edgekd.export.api import run_export
    from edgekd.export.formats import resolve_formats

    names = [s.name for s in resolve_formats(formats)] if formats is not None else None
    return _standalone(cfg, run, lambda: run_export(run, cfg, names, force=True))


def bench_stage(cfg: Config, run: RunDir) -> dict:
    """Measure now (every artifact, the teacher, the PyTorch student); returns the bench sections of the report."""
    from edgekd.benchmarks.api import run_bench

    return _standalone(cfg, run, lambda: run_bench(run, cfg, force=True))


def run_config(
    config: Optional[str] = None,
    preset: Optional[str] = None,
    overrides: Optional[dict] = None,
    *,
    data: Optional[str] = None,
    seeds: Optional[int] = None,
    stages: Optional[list[str]] = None,
    skip_bad_images: bool = False,
) -> Config:
    """The validated config of `edgekd run` (and edgekd.distill): defaults < preset < file < overrides, with
    --data / --seeds / --stages / --skip-bad-images folded into the overrides."""
    import copy

    from edgekd.pipeline.config import load_config

    over = copy.deepcopy(overrides or {})
    if seeds is not None:
        over.setdefault("train", {})["seeds"] = seeds
    if data:
        over.setdefault("data", {})["source"] = str(data)
    if skip_bad_images:
        over.setdefault("data", {})["skip_bad_images"] = True
    if stages:
        over["stages"] = [s.strip() for s in stages if s and s.strip()]
    return load_config(config, preset, over)
