"""`edgekd bench RUN_DIR`: measure exported artifacts and the teacher, write the report."""

from __future__ import annotations

import shlex
import sys

from pipeline.errors import EdgekdError

EPILOG = "Exit codes: 0 ok, 2 bad input/config, 130 interrupted. Goals are reported, never an exit code."


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark exported artifacts and the teacher; write report.md/html", epilog=EPILOG,
        description="Measure every exported artifact, the teacher (PyTorch and ONNX in onnxruntime) and the PyTorch "
                    "student, each in a fresh process per thread profile: size, load time, first inference, "
                    "batch-1 latency percentiles, throughput, peak RSS, accuracy and agreement. Updates "
                    "RUN_DIR/report.json and renders RUN_DIR/report.md and report.html.")
    p.add_argument("run_dir", help="run directory created by `edgekd run`")
    p.add_argument("--profile", help="comma-separated thread profiles: tablet (4 threads), big-core (1 thread), "
                                     "or N-threads (default: bench.profiles, tablet)")
    p.add_argument("--min-queries", type=int, help="minimum timed queries per measurement (bench.min_queries)")
    p.add_argument("--min-seconds", type=float, help="minimum timed seconds per measurement (bench.min_seconds)")
    p.add_argument("--mlperf", action="store_true", help="MLPerf single-stream minimums: 1024 queries and 60 s")
    p.add_argument("--compare", metavar="RUN_B", help="put this run and RUN_B side by side (no measuring); markdown "
                                                      "to stdout and RUN_DIR/compare-<RUN_B>.md")
    p.add_argument("--save-results", metavar="NAME", help="also write benchmarks/results/NAME.md (command, machine, "
                                                         "date, table) to commit")
    p.add_argument("--render-only", action="store_true", help="only re-render report.md/html from report.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set bench.warmup=20 (repeatable)")
    p.set_defaults(func=cmd_bench)


def _config(args, run):
    from pipeline.config import _deep_update, load_config, parse_set

    base = run.config()
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
    return load_config(None, base.preset, _deep_update(base.model_dump(mode="json"), over))


def cmd_bench(args) -> int:
    from pipeline.rundir import RunDir

    from benchmarks import compare as cmp
    from benchmarks.machine import parse_profiles
    from benchmarks.report import render

    run = RunDir(args.run_dir)
    if not run.root.is_dir():
        raise EdgekdError(f"run directory not found: {run.root}")
    command = "edgekd " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "edgekd bench"
    comparison = None
    if args.compare:
        comparison, path = cmp.compare(run.root, args.compare)
        print(comparison)
        print(f"[edgekd] comparison written to {path}", file=sys.stderr)
    elif args.render_only:
        md, htm = render(run)
        print(f"[edgekd] rendered {md} and {htm}", file=sys.stderr)
    else:
        from benchmarks.api import run_bench

        cfg = _config(args, run)
        parse_profiles(cfg.bench.profiles)  # a bad profile fails before anything is measured
        run.save_config(cfg)
        run_bench(run, cfg, force=True)
    if args.save_results:
        path = cmp.save_results(run, args.save_results, command, comparison)
        print(f"[edgekd] results written to {path}", file=sys.stderr)
    return 0
