"""`edgekd export RUN_DIR [--formats a,b,...] [--set key=value ...]`."""

from __future__ import annotations

from export.formats import DEFAULT_GATES, FORMATS

EPILOG = ("Exit codes: 0 ok, 2 bad input/config, 3 an artifact missed its parity gate or failed to convert "
          "(the manifest is still written).")


def register(subparsers) -> None:
    rows = "; ".join(f"{s.name} ({s.format} {s.precision})" for s in FORMATS.values())
    p = subparsers.add_parser(
        "export", help="export the distilled student (ONNX, TFLite, CoreML) with parity checks", epilog=EPILOG,
        description="Turn RUN_DIR/student into deployable files under RUN_DIR/exports/ (model file, model.json, "
        f"labels.txt per artifact, manifest.json). Formats: {rows}. Default parity gates: "
        + ", ".join(f"{k}={v}" for k, v in DEFAULT_GATES.items()) + " (override with --set export.gates.KEY=VALUE).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory created by `edgekd run`")
    p.add_argument("--formats", help=f"comma-separated subset (default: export.formats of the run's config); "
                   f"any of {', '.join(FORMATS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set export.calibration_images=100 (repeatable)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from export.api import run_export
    from export.formats import check_gate_keys, resolve_formats
    from pipeline.cli import _apply_threads, _deep_merge
    from pipeline.config import load_config, parse_set
    from pipeline.rundir import RunDir

    run = RunDir(args.run_dir)
    if not run.root.is_dir():
        from pipeline.errors import EdgekdError

        raise EdgekdError(f"run directory not found: {run.root}")
    base = run.config()
    cfg = load_config(None, base.preset, _deep_merge(base.model_dump(mode="json"), parse_set(args.overrides)))
    formats = [s.name for s in resolve_formats(args.formats)] if args.formats else None  # fail fast on a typo
    resolve_formats(cfg.export.formats)
    check_gate_keys(cfg.export.gates)
    if args.overrides:  # validated: keep them with the run like `edgekd distill --set` does
        run.save_config(cfg)
    _apply_threads(cfg)
    run_export(run, cfg, formats)
    return 0
