"""edgekd from Python: distil, export, benchmark, read the typed report and the model card.

    python examples/distill_api.py                      # ELPV, quick preset, into runs/api-example (minutes)
    python examples/distill_api.py --data DIR --out RUN_DIR --formats onnx --set train.epochs=2 ...

CI runs it on a tiny generated ImageFolder with tiny settings (tests/test_api.py).
"""

from __future__ import annotations

import argparse
import sys

import yaml

import edgekd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="elpv", help="'elpv' or an ImageFolder directory")
    ap.add_argument("--out", default="runs/api-example", help="run directory")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--formats", default="onnx,tflite-int8", help="comma-separated export formats")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.overrides:  # the same values as the CLI's --set, as a dict of dotted keys
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value) if value else ""

    try:
        # data -> teacher -> soft labels -> student + baseline -> evaluate (export and bench come next)
        run = edgekd.distill(
            data=args.data,
            preset=args.preset,
            out=args.out,
            overrides=overrides,
            stages=["data", "teacher", "soft_labels", "student", "baseline", "evaluate"],
        )
    except edgekd.GateFailed as e:  # a quality gate failed: every result is still written
        print(f"gate failed: {e}", file=sys.stderr)
        run = e.run
    r = run.report
    print(f"teacher  {r.teacher.arch}: accuracy {r.teacher.accuracy:.1%}, macro-F1 {r.teacher.macro_f1:.2f}")
    print(f"student  {r.student.arch}: accuracy {r.student.accuracy:.1%}, macro-F1 {r.student.macro_f1:.2f}")
    print(f"baseline {r.baseline.arch}: accuracy {r.baseline.accuracy:.1%}, macro-F1 {r.baseline.macro_f1:.2f}")
    print(f"KD verdict: {r.kd.conclusion} (gain {r.kd.gain_points:+.1f} pts, 95% CI {r.kd.ci95})")
    for cls, recall in r.student.per_class_recall.items():
        print(f"  student recall {cls}: {recall:.1%}")

    try:
        artifacts = run.export(formats=args.formats.split(","))
        run.bench()
    except edgekd.GateFailed as e:
        print(f"gate failed: {e}", file=sys.stderr)
        artifacts = run.report.artifacts
    for a in edgekd.Run.open(args.out).report.artifacts:
        lat = ", ".join(f"{p} {ms:.2f} ms" for p, ms in a.latency_p50_ms.items()) or "not measured"
        print(f"{a.name}: {a.status}, agreement {a.agreement}, accuracy {a.accuracy}, p50 {lat}")
    print(f"model card: {run.path / 'MODEL_CARD.md'}")
    return 0 if all(a.ok for a in artifacts) and run.report.passed else 3


if __name__ == "__main__":
    sys.exit(main())
