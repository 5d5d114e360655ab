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
import json
import shlex
import sys
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
    if not run.root.is_dir():
        raise EdgekdError(f"run directory not found: {run.root}")
    return run


def _seed_override(args, overrides: dict) -> dict:
    """--seeds N is train.seeds=N (validated with the rest of the config)."""
    if getattr(args, "seeds", None) is not None:
        overrides.setdefault("train", {})["seeds"] = args.seeds
    return overrides


def _run_config(run, overrides: dict):
    """The run's saved config with --set overrides applied (validated)."""
    from edgekd.pipeline.config import with_overrides

    return with_overrides(run.config(), overrides)


def cmd_run(args) -> int:
    from edgekd.pipeline.config import load_config, parse_set
    from edgekd.pipeline.rundir import RunDir
    from edgekd.stage_table import run_stages

    overrides = _seed_override(args, parse_set(args.overrides))
    if args.data:
        overrides.setdefault("data", {})["source"] = args.data
    if args.skip_bad_images:
        overrides.setdefault("data", {})["skip_bad_images"] = True
    if args.stages:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    cfg = load_config(args.config, args.preset, overrides)
    out = Path(args.out or Path("runs") / f"{cfg.name}-{cfg.preset}")
    if args.nproc_per_node > 1 and not os.environ.get("LOCAL_RANK"):
        from edgekd.pipeline.distributed import launch

        rc = launch("edgekd", args.argv + ([] if args.out else ["--out", str(out)]), args.nproc_per_node)
        if rc == 0:
            return 0
        rep = out / "report.json"
        gates = json.loads(rep.read_text()).get("gates", []) if rep.exists() else []
        if any(not g.get("passed", True) for g in gates):
            return 3  # rank 0 already printed which gate failed
        raise EdgekdError(f"the distributed run failed (exit {rc}); see the rank output above")
    run = RunDir(out)
    run.root.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":
        run.save_config(cfg)
    run_stages(cfg, run, cfg.stages, args.resume)
    return 0


def cmd_stage(args) -> int:
    from edgekd.pipeline.config import parse_set
    from edgekd.pipeline.rundir import RunDir
    from edgekd.stage_table import STAGE_GROUPS, run_stages

    run = RunDir(args.run_dir)
    cfg = _run_config(run, _seed_override(args, parse_set(args.overrides)))
    run.save_config(cfg)
    run_stages(cfg, run, STAGE_GROUPS[args.stage], args.resume)
    return 0


def cmd_export(args) -> int:
    from edgekd.export.formats import check_gate_keys, resolve_formats
    from edgekd.pipeline.config import parse_set

    run = _run_dir(args.run_dir)
    cfg = _run_config(run, parse_set(args.overrides))
    formats = [s.name for s in resolve_formats(args.formats)] if args.formats else None  # fail fast on a typo
    resolve_formats(cfg.export.formats)
    check_gate_keys(cfg.export.gates)
    if args.overrides:  # validated: keep them with the run like `edgekd distill --set` does
        run.save_config(cfg)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    from edgekd.export.api import run_export

    run_export(run, cfg, formats)
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
    return _run_config(run, over)


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
        md, htm = render(run)
        print(f"[edgekd] rendered {md} and {htm}", file=sys.stderr)
    else:
        from edgekd.benchmarks.api import run_bench

        cfg = _bench_config(args, run)
        parse_profiles(cfg.bench.profiles)  # a bad profile fails before anything is measured
        run.save_config(cfg)
        run_bench(run, cfg, force=True)
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
        print(
            "\nedgekd: interrupted; finished epochs are saved, rerun the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
