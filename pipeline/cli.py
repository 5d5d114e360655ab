"""`edgekd`: thin CLI. Parses, calls stages, maps errors to one line and an exit code.

Exit codes: 0 ok, 2 bad input/config/environment, 3 a quality gate failed (results written),
130 interrupted (finished epochs are kept; rerun with --resume).
"""

from __future__ import annotations

import os

# Set before torch loads its OpenMP runtime: spinning worker threads collapse throughput 3-5x as
# soon as anything else wants the same cores (measured: 10-20 s vs 4 s per teacher step on 2
# busy cores), and cost little when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

from pipeline import __version__
from pipeline.errors import EdgekdError, GateFailed

EPILOG = "Exit codes: 0 ok, 2 bad input/config, 3 quality gate failed (results still written), 130 interrupted."


def _common_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 --set kd.alpha=0.7 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted training from its last epoch checkpoint")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgekd", description="Distil a large vision classifier into a MobileNetV3 "
                                 "student, export it for devices, benchmark it, ship it to Android.", epilog=EPILOG)
    ap.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the whole pipeline into a run directory", epilog=EPILOG,
                       description="data -> teacher -> soft labels -> student + baseline -> evaluate -> export -> bench. "
                       "Stages whose inputs did not change are skipped.")
    r.add_argument("--config", help="YAML config file (see configs/)")
    r.add_argument("--preset", choices=["quick", "full"], help="quick: minutes on a laptop CPU; full: quality (default)")
    r.add_argument("--data", help="'elpv' (default, bundled) or an ImageFolder directory")
    r.add_argument("--out", help="run directory (default runs/<name>-<preset>)")
    r.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images and list them in the data report")
    r.add_argument("--stages", help="comma-separated subset of stages to run (default: all in the config)")
    r.add_argument("--nproc-per-node", type=int, default=1,
                   help="processes for distributed training (torchrun; gloo on CPU, NCCL on GPUs)")
    _common_config_args(r)
    r.set_defaults(func=cmd_run)

    for name, helptext in (("teacher", "obtain / fine-tune the teacher"),
                           ("distill", "soft labels, distilled student and hard-label baseline"),
                           ("evaluate", "test-split metrics and the accuracy-gap gate")):
        p = sub.add_parser(name, help=helptext, description=f"{helptext} in an existing run directory.", epilog=EPILOG)
        p.add_argument("run_dir", help="run directory created by `edgekd run`")
        _common_config_args(p)
        p.set_defaults(func=cmd_stage, stage=name)

    # Optional command groups live beside their code.
    for mod in ("export.cli", "benchmarks.cli", "pipeline.android"):
        try:
            importlib.import_module(mod).register(sub)
        except ModuleNotFoundError as e:
            if e.name and not mod.startswith(e.name):
                raise
    return ap


STAGE_GROUPS = {"teacher": ["teacher"], "distill": ["soft_labels", "student", "baseline"], "evaluate": ["evaluate"]}


def _apply_threads(cfg) -> None:
    import torch

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def run_stages(cfg, run, stages: list[str], resume: bool) -> None:
    from pipeline import distributed as dist_
    from pipeline import stages as st
    from pipeline.progress import log
    from pipeline.report import update_report

    _apply_threads(cfg)
    dist_.init_from_env()
    t_all = time.time()
    data = st.stage_data(cfg, run) if "data" in stages else st.load_split(run)
    if "teacher" in stages:
        st.stage_teacher(cfg, run, data, resume=resume)
    elif set(stages) & {"soft_labels", "student", "evaluate"}:
        st.check_teacher_current(cfg, run, data)
    if "soft_labels" in stages:
        st.stage_soft_labels(cfg, run, data)
    for kind in st.STUDENT_KINDS:
        if kind in stages:
            st.stage_student(cfg, run, data, kind, resume=resume)
    if not dist_.is_main():  # evaluation, export and reports happen once, on rank 0
        return
    gate_error: Optional[GateFailed] = None
    if "evaluate" in stages:
        st.stage_evaluate(cfg, run, data)
        try:
            st.check_gates(run)
        except GateFailed as e:  # finish the remaining stages so every result is on disk, then fail
            gate_error = e
    if "export" in stages:
        try:
            importlib.import_module("export.api").run_export(run, cfg)
        except GateFailed as e:  # still benchmark what exported; fail at the end
            gate_error = gate_error or e
    if "bench" in stages:
        importlib.import_module("benchmarks.api").run_bench(run, cfg)
    if run.report_json.exists():
        update_report(run)
    log(f"done in {time.time() - t_all:.0f}s: {run.root / 'report.md'}")
    if gate_error:
        raise gate_error


def cmd_run(args) -> int:
    from pipeline.config import load_config, parse_set
    from pipeline.rundir import RunDir

    overrides = parse_set(args.overrides)
    if args.data:
        overrides.setdefault("data", {})["source"] = args.data
    if args.skip_bad_images:
        overrides.setdefault("data", {})["skip_bad_images"] = True
    if args.stages:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    cfg = load_config(args.config, args.preset, overrides)
    stages = cfg.stages
    if args.nproc_per_node > 1 and not os.environ.get("LOCAL_RANK"):
        from pipeline.distributed import launch

        out = Path(args.out or Path("runs") / f"{cfg.name}-{cfg.preset}")
        rc = launch(args.argv + ([] if args.out else ["--out", str(out)]), args.nproc_per_node)
        if rc == 0:
            return 0
        rep = out / "report.json"
        gates = json.loads(rep.read_text()).get("gates", []) if rep.exists() else []
        if any(not g.get("passed", True) for g in gates):
            return 3  # rank 0 already printed which gate failed
        raise EdgekdError(f"the distributed run failed (exit {rc}); see the rank output above")
    run = RunDir(args.out or Path("runs") / f"{cfg.name}-{cfg.preset}")
    run.root.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":
        run.save_config(cfg)
    run_stages(cfg, run, stages, args.resume)
    return 0


def cmd_stage(args) -> int:
    from pipeline.config import load_config, parse_set
    from pipeline.rundir import RunDir

    run = RunDir(args.run_dir)
    base = run.config()
    cfg = load_config(None, base.preset, _deep_merge(base.model_dump(mode="json"), parse_set(args.overrides)))
    run.save_config(cfg)
    run_stages(cfg, run, STAGE_GROUPS[args.stage], args.resume)
    return 0


def _deep_merge(a: dict, b: dict) -> dict:
    from pipeline.config import _deep_update

    return _deep_update(a, b)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GateFailed as e:
        print(f"edgekd: {e}", file=sys.stderr)
        return 3
    except EdgekdError as e:
        print(f"edgekd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nedgekd: interrupted; finished epochs are saved, rerun the same command with --resume to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
