"""`edgekd`: the command line. Parses, calls stages (edgekd.stage_table), maps errors to one line and an exit code.

Every subcommand is defined here; the packages below expose plain functions and never parse arguments.

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
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from edgekd.pipeline import __version__
from edgekd.pipeline.errors import EdgekdError, GateFailed

EPILOG = "Exit codes: 0 ok, 2 bad input/config, 3 quality gate failed (results still written), 130 interrupted."
EXPORT_EPILOG = (
    "Exit codes: 0 ok, 2 bad input/config, 3 an artifact missed its parity gate or failed to convert "
    "(the manifest is still written)."
)
BENCH_EPILOG = "Exit codes: 0 ok, 2 bad input/config, 130 interrupted. Goals are reported, never an exit code."


def _set_arg(p: argparse.ArgumentParser, example: str = "--set train.epochs=5 --set kd.alpha=0.7") -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. {example} (repeatable)",
    )


def _common_config_args(p: argparse.ArgumentParser, seeds: bool = True) -> None:
    _set_arg(p)
    p.add_argument("--resume", action="store_true", help="continue interrupted training from its last epoch checkpoint")
    if seeds:
        p.add_argument(
            "--seeds",
            type=int,
            metavar="N",
            help="train (and evaluate) student and baseline for N seeds and report the KD verdict over them: "
            "mean +- std, a paired bootstrap 95%% interval of the KD gain, McNemar's test (sets train.seeds)",
        )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgekd",
        description="Distil a large vision classifier into a MobileNetV3 "
        "student, export it for devices, benchmark it, ship it to Android.",
        epilog=EPILOG,
    )
    ap.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="run the whole pipeline into a run directory",
        epilog=EPILOG,
        description="data -> teacher -> soft labels -> student + baseline -> evaluate -> export -> bench. "
        "Stages whose inputs did not change are skipped.",
    )
    r.add_argument("--config", help="YAML config file (see configs/)")
    r.add_argument(
        "--preset", choices=["quick", "full"], help="quick: minutes on a laptop CPU; full: quality (default)"
    )
    r.add_argument("--data", help="'elpv' (default, bundled) or an ImageFolder directory")
    r.add_argument("--out", help="run directory (default runs/<name>-<preset>)")
    r.add_argument(
        "--skip-bad-images", action="store_true", help="skip unreadable images and list them in the data report"
    )
    r.add_argument("--stages", help="comma-separated subset of stages to run (default: all in the config)")
    r.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes for distributed training (torchrun; gloo on CPU, NCCL on GPUs)",
    )
    _common_config_args(r)
    r.set_defaults(func=cmd_run)

    for name, helptext in (
        ("teacher", "obtain / fine-tune the teacher"),
        ("distill", "soft labels, distilled student and hard-label baseline"),
        ("evaluate", "test-split metrics and the accuracy-gap gate"),
    ):
        p = sub.add_parser(name, help=helptext, description=f"{helptext} in an existing run directory.", epilog=EPILOG)
        p.add_argument("run_dir", help="run directory created by `edgekd run`")
        _common_config_args(p, seeds=name != "teacher")
        p.set_defaults(func=cmd_stage, stage=name)

    _add_export(sub)
    _add_bench(sub)
    _add_android(sub)
    return ap


def _add_export(sub) -> None:
    from edgekd.export.formats import DEFAULT_GATES, FORMATS

    rows = "; ".join(f"{s.name} ({s.format} {s.precision})" for s in FORMATS.values())
    p = sub.add_parser(
        "export",
        help="export the distilled student (ONNX, TFLite, CoreML) with parity checks",
        epilog=EXPORT_EPILOG,
        description="Turn RUN_DIR/student into deployable files under RUN_DIR/exports/ (model file, model.json, "
        f"labels.txt per artifact, manifest.json). Formats: {rows}. Default parity gates: "
        + ", ".join(f"{k}={v}" for k, v in DEFAULT_GATES.items())
        + " (override with --set export.gates.KEY=VALUE).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory created by `edgekd run`")
    p.add_argument(
        "--formats",
        help=f"comma-separated subset (default: export.formats of the run's config); any of {', '.join(FORMATS)}",
    )
    _set_arg(p, "--set export.calibration_images=100")
    p.set_defaults(func=cmd_export)


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark exported artifacts and the teacher; write report.md/html",
        epilog=BENCH_EPILOG,
        description="Measure every exported artifact, the teacher (PyTorch and ONNX in onnxruntime) and the PyTorch "
        "student, each in a fresh process per thread profile: size, load time, first inference, "
        "batch-1 latency percentiles, throughput, peak RSS, accuracy and agreement. Updates "
        "RUN_DIR/report.json and renders RUN_DIR/report.md and report.html.",
    )
    p.add_argument("run_dir", help="run directory created by `edgekd run`")
    p.add_argument(
        "--profile",
        help="comma-separated thread profiles: tablet (4 threads), big-core (1 thread), "
        "or N-threads (default: bench.profiles, tablet)",
    )
    p.add_argument("--min-queries", type=int, help="minimum timed queries per measurement (bench.min_queries)")
    p.add_argument("--min-seconds", type=float, help="minimum timed seconds per measurement (bench.min_seconds)")
    p.add_argument("--mlperf", action="store_true", help="MLPerf single-stream minimums: 1024 queries and 60 s")
    p.add_argument(
        "--compare",
        metavar="RUN_B",
        help="put this run and RUN_B side by side (no measuring); markdown to stdout and RUN_DIR/compare-<RUN_B>.md",
    )
    p.add_argument(
        "--save-results",
        metavar="NAME",
        help="also write benchmarks/results/NAME.md (command, machine, date, table) to commit",
    )
    p.add_argument("--render-only", action="store_true", help="only re-render report.md/html from report.json")
    _set_arg(p, "--set bench.warmup=20")
    p.set_defaults(func=cmd_bench)


def _add_android(sub) -> None:
    from edgekd.android.install import DEFAULT_APP, PRECISIONS
    from edgekd.android.install import __doc__ as install_doc

    p = sub.add_parser(
        "android",
        help="the Android demo app (android_demo/)",
        description="Install an exported student into the Android demo app.",
    )
    asub = p.add_subparsers(dest="android_command", metavar="COMMAND")
    asub.required = True
    i = asub.add_parser(
        "install",
        help="copy a TFLite export into the app's assets (and build/install it)",
        description=install_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding exports/manifest.json")
    i.add_argument("--app", default=None, help=f"Android project folder (default: {DEFAULT_APP})")
    i.add_argument("--precision", choices=PRECISIONS, default="int8", help="which TFLite artifact (default: int8)")
    i.add_argument("--build", action="store_true", help="build the debug APK and adb-install it (needs an Android SDK)")
    i.add_argument("--device", default=None, metavar="SERIAL", help="adb device serial (adb -s)")
    i.add_argument("--golden-count", type=int, default=4, help="golden test vectors to write (default: 4)")
    i.set_defaults(func=cmd_android_install)


# ----------------------------------------------------------------------------------------------
# commands


def _run_dir(path: str):
    from edgekd.pipeline.rundir import RunDir

    run = RunDir(path)
    if run.root.exists() and not run.root.is_dir():
        raise EdgekdError(f"{run.root} is a file, not a run directory; pass the folder `edgekd run --out` made")
    if not run.root.is_dir():
        raise EdgekdError(
            f"run directory not found: {run.root} is not an edgekd run directory (it does not exist); "
            f"create it with `edgekd run --out {run.root}`"
        )
    return run


def _seed_override(args, overrides: dict) -> dict:
    """--seeds N is train.seeds=N (validated with the rest of the config)."""
    if getattr(args, "seeds", None) is not None:
        overrides.setdefault("train", {})["seeds"] = args.seeds
    return overrides


def _run_config(run, overrides: dict, command: Optional[str] = None):
    """The run's saved config with --set overrides applied (validated). With `command`, an override of a key
    that the run's trained outputs were made with (e.g. `evaluate RUN --set student.width_mult=0.5`) is refused
    before anything is written, so the run's config.yaml keeps describing its weights."""
    from edgekd.pipeline.config import with_overrides

    saved = run.config()
    cfg = with_overrides(saved, overrides)
    if command is not None:
        _refuse_contradictions(command, saved, cfg, run)
    return cfg


# What `edgekd <command> RUN_DIR --set` may change: the sections that command (re)computes, plus keys that change
# speed, not results, and sections that only describe or record the run (tracking, the model card's texts), which
# every command rewrites from scratch. Anything else would describe weights the run does not have.
SPEED_KEYS = ("train.threads", "train.device", "train.num_workers")
NO_WEIGHTS = ("track", "card")
SETTABLE = {
    "teacher": ("teacher", "gate", "export", "bench", "train.amp", "train.channels_last"),
    "distill": ("student", "kd", "train", "gate", "export", "bench"),
    "evaluate": ("gate", "train.seeds", "export", "bench"),
    "export": ("export", "bench", "gate"),
    "bench": ("bench",),
}
RETRAIN_HINT = {
    "teacher": "`edgekd run --out {run} --set ...` (it redoes the stages that depend on it)",
    "student": "`edgekd distill {run} --set ...` (then evaluate/export)",
    "kd": "`edgekd distill {run} --set ...`",
    "train": "`edgekd distill {run} --set ...`",
}


def _refuse_contradictions(command: str, saved, cfg, run) -> None:
    from edgekd.pipeline.config import flat_settings

    old, new = flat_settings(saved.model_dump(mode="json")), flat_settings(cfg.model_dump(mode="json"))
    allowed = SETTABLE[command] + SPEED_KEYS + NO_WEIGHTS
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key) or any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        section = key.split(".")[0]
        how = RETRAIN_HINT.get(section, "`edgekd run --out {run} --set ...`").format(run=run.root)
        raise EdgekdError(
            f"--set {key}={new.get(key)!r} contradicts {run.root}: its outputs were made with {key}={old.get(key)!r} "
            f"and `edgekd {command}` does not redo that; to change it use {how}"
        )


def cmd_run(args) -> int:
    from edgekd.pipeline.config import parse_set
    from edgekd.pipeline.rundir import RunDir
    from edgekd.stage_table import run_config, run_stages

    if args.config:
        _check_text_file(Path(args.config), "config file")
    if args.nproc_per_node < 1:
        raise EdgekdError(f"--nproc-per-node {args.nproc_per_node}: give 1 or more processes")
    cfg = run_config(  # the one resolution of `edgekd run` and edgekd.distill()
        args.config,
        args.preset,
        parse_set(args.overrides),
        data=args.data,
        seeds=args.seeds,
        stages=args.stages.split(",") if args.stages else None,
        skip_bad_images=args.skip_bad_images,
    )
    out = Path(args.out or Path("runs") / f"{cfg.name}-{cfg.preset}")
    _check_out_dir(out)
    run = RunDir(out)
    if args.nproc_per_node > 1 and not os.environ.get("LOCAL_RANK"):
        from edgekd.pipeline.distributed import launch

        with run.locked(_command(args)):  # the ranks inherit the lock (EDGEKD_LOCK_HELD)
            rc = launch("edgekd", args.argv + ([] if args.out else ["--out", str(out)]), args.nproc_per_node)
        if rc in (0, 2, 3, 130):
            return rc  # the failing rank already printed edgekd's one line
        raise EdgekdError(f"the distributed run failed (exit {rc}); see the rank output above")
    with run.locked(_command(args)):
        if os.environ.get("RANK", "0") == "0":
            run.save_config(cfg)
        run_stages(cfg, run, cfg.stages, args.resume)
    return 0


@contextmanager
def _saved_config(run, cfg):
    """Save `cfg` as the run's config.yaml for the command's duration; when the command ends in bad input
    (EdgekdError, not a failed gate) the previous config.yaml is put back, so a refused command changes nothing."""
    from edgekd.pipeline.rundir import atomic_write_bytes

    p = run.path("config.yaml")
    old = p.read_bytes() if p.is_file() else None
    run.save_config(cfg)
    try:
        yield
    except (EdgekdError, OSError) as e:
        if not isinstance(e, GateFailed):
            if old is None:
                p.unlink(missing_ok=True)
            else:
                atomic_write_bytes(p, old)
        raise


def _command(args) -> str:
    return "edgekd " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []) or [])


def _check_text_file(path: Path, what: str) -> None:
    """A file the user names must exist and be UTF-8 text (YAML)."""
    if not path.exists():
        raise EdgekdError(f"{what} not found: {path}")
    if not path.is_file():
        raise EdgekdError(f"{what} {path} is a folder, not a file; pass a YAML file (see configs/)")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgekdError(
            f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8 YAML (see configs/ for examples)"
        ) from None


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out} is a file; give a folder (new or an earlier run directory)")
    others = [p for p in out.iterdir() if p.name != ".edgekd.lock"] if out.is_dir() else []  # our own lock
    if others and not (out / "config.yaml").exists() and not (out / "stages.json").exists():
        raise EdgekdError(
            f"--out {out} is a folder with other files in it, not an edgekd run directory; give a new or empty folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgekdError(f"cannot create the run directory {out}: {e.strerror}; choose another --out") from None


def cmd_stage(args) -> int:
    from edgekd.pipeline.config import parse_set
    from edgekd.stage_table import STAGE_GROUPS, run_stages

    run = _run_dir(args.run_dir)
    cfg = _run_config(run, _seed_override(args, parse_set(args.overrides)), args.stage)
    with run.locked(_command(args)), _saved_config(run, cfg):
        run_stages(cfg, run, STAGE_GROUPS[args.stage], args.resume)
    return 0


def cmd_export(args) -> int:
    from edgekd.export.formats import check_gate_keys, resolve_formats
    from edgekd.pipeline.config import parse_set

    run = _run_dir(args.run_dir)
    cfg = _run_config(run, parse_set(args.overrides), "export")
    formats = [s.name for s in resolve_formats(args.formats)] if args.formats else None  # fail fast on a typo
    resolve_formats(cfg.export.formats)
    check_gate_keys(cfg.export.gates)
    with run.locked(_command(args)), _saved_config(run, cfg):  # validated --set: kept with the run
        if cfg.train.threads:
            import torch

            torch.set_num_threads(cfg.train.threads)
        from edgekd.stage_table import export_stage  # + reports, model card, tracking (as Run.export())

        export_stage(cfg, run, formats)
    return 0


def _bench_config(args, run):
    from edgekd.pipeline.config import parse_set

    over = parse_set(args.overrides)
    bench = over.setdefault("bench", {})
    if args.profile:
        bench["profiles"] = [x.strip() for x in args.profile.split(",") if x.strip()]
    if args.mlperf:
        bench["min_queries"], bench["min_seconds"] = 1024, 60.0
    if args.min_queries is not None:
        bench["min_queries"] = args.min_queries
    if args.min_seconds is not None:
        bench["min_seconds"] = args.min_seconds
    return _run_config(run, over, "bench")


def cmd_bench(args) -> int:
    from edgekd.benchmarks import compare as cmp
    from edgekd.benchmarks.machine import parse_profiles
    from edgekd.benchmarks.report import render

    run = _run_dir(args.run_dir)
    command = "edgekd " + " ".join(shlex.quote(a) for a in args.argv) if args.argv else "edgekd bench"
    comparison = None
    if args.compare:
        comparison, path = cmp.compare(run.root, args.compare)
        print(comparison)
        print(f"[edgekd] comparison written to {path}", file=sys.stderr)
    elif args.render_only:
        with run.locked(_command(args)):
            md, htm = render(run)
        print(f"[edgekd] rendered {md} and {htm}", file=sys.stderr)
    else:
        from edgekd.stage_table import bench_stage

        cfg = _bench_config(args, run)
        parse_profiles(cfg.bench.profiles)  # a bad profile fails before anything is measured
        run.require(run.teacher_meta, f"run the teacher stage first (edgekd teacher {run.root})")
        with run.locked(_command(args)), _saved_config(run, cfg):
            bench_stage(cfg, run)  # + reports, model card, tracking (as Run.bench())
    if args.save_results:
        path = cmp.save_results(run, args.save_results, command, comparison)
        print(f"[edgekd] results written to {path}", file=sys.stderr)
    return 0


def cmd_android_install(args) -> int:
    from edgekd.android.install import BuildUnavailable, default_app, install, print_result

    app = Path(args.app) if args.app else default_app()
    try:
        r = install(
            Path(args.run_dir),
            app,
            precision=args.precision,
            build=args.build,
            device=args.device,
            golden_count=args.golden_count,
        )
    except BuildUnavailable as e:
        print("\n".join(e.instructions))
        raise
    print_result(r, app)
    return 0


def _say(line: str) -> None:
    """edgekd's one line, printed by one process: under torchrun only rank 0 speaks (every rank hits the
    same error)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


def _sigterm(signum, frame):  # `kill PID`, a scheduler's stop: the same clean end as Ctrl-C
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import signal
    import threading

    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return int(args.func(args) or 0)
    except GateFailed as e:
        _say(f"edgekd: {e}")
        return 3
    except EdgekdError as e:
        _say(f"edgekd: error: {e}")
        return 2
    except FileNotFoundError as e:  # a file an earlier stage should have written (an unfinished run)
        _say(
            f"edgekd: error: {e.filename or e} is missing; rerun the stage that writes it "
            "(`edgekd run --out RUN_DIR` redoes what is missing)"
        )
        return 2
    except OSError as e:  # the environment: permissions, a full disk, a path that is not what it should be
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        _say(f"edgekd: error: {e.strerror or e}{where}; check that path (permissions, free space) and rerun")
        return 2
    except KeyboardInterrupt:
        _say("\nedgekd: interrupted; finished epochs are saved, rerun the same command with --resume to continue")
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
