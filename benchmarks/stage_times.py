"""Stage wall times and test results of finished runs side by side: an A/B of two versions of the code (or two
settings) on the same command.

    python -m edgekd.benchmarks.stage_times --collect NAME=RUN_DIR [--collect ...] [--label LABEL=TEXT ...]
                                            [--note TEXT ...] --out benchmarks/results/NAME

Each row is one run directory: the seconds of every stage it ran (stages.json), the test accuracy of teacher,
student and baseline (eval/metrics.json), and the largest difference of its test logits from the first row's
(eval/logits.npz; 0.0 means the same outputs). Rows are grouped by LABEL, the name without its trailing digits
(old1, old2 -> old), and each group's mean per stage is shown: run A and B alternately (ABBA) on the same
machine so that a change in the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.benchmarks.compare import write_results
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.machine import summary as machine_summary
from edgekd.pipeline.rundir import RunDir, read_json


def run_row(name: str, run_dir: Path, first_logits: Optional[dict] = None) -> tuple[dict, dict]:
    """(row, its test logits by model) of one finished run directory."""
    run = RunDir(run_dir)
    stages = read_json(run.require(run.path("stages.json"), "not a finished run directory"))
    metrics = read_json(run.require(run.metrics, "run the evaluate stage first"))
    with np.load(run.path("eval", "logits.npz")) as z:
        logits = {k: z[k] for k in z.files if k not in ("labels", "keys")}
    row = {
        "name": name,
        "label": re.sub(r"\d+$", "", name) or name,
        "run_dir": str(run_dir),
        "stage_seconds": {k: round(v["seconds"], 1) for k, v in stages.items()},
        "accuracy": {k: metrics[k]["accuracy"] for k in ("teacher", "student", "baseline") if k in metrics},
    }
    row["total_seconds"] = round(sum(row["stage_seconds"].values()), 1)
    if first_logits is not None:
        common = sorted(set(first_logits) & set(logits))
        row["max_abs_logit_diff_vs_first"] = {
            k: float(np.abs(logits[k] - first_logits[k]).max()) if logits[k].shape == first_logits[k].shape else None
            for k in common
        }
    return row, logits


def group_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean seconds per stage (and in total) of each label's rows."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        stages = dict.fromkeys(s for r in mine for s in r["stage_seconds"])
        out[label] = {s: round(float(np.mean([r["stage_seconds"].get(s, 0.0) for r in mine])), 1) for s in stages}
        out[label]["total"] = round(float(np.mean([r["total_seconds"] for r in mine])), 1)
    return out


def render_markdown(doc: dict) -> str:
    stages = list(dict.fromkeys(s for r in doc["rows"] for s in r["stage_seconds"]))
    lines = [f"# Stage times ({doc['date']})", "", f"- command: `{doc['command']}`", f"- machine: {doc['machine']}"]
    lines += [f"- {label}: {text}" for label, text in doc["labels"].items()]
    lines += [f"- {n}" for n in doc.get("notes", [])]
    lines += [
        "- seconds per stage from each run's stages.json; test accuracy from eval/metrics.json; max |logit "
        "difference| from the first row's test logits, over every model",
        "",
        "| row | " + " | ".join(stages) + " | total s | teacher / student / baseline acc | max logit diff |",
        "|---" * (len(stages) + 4) + "|",
    ]
    for r in doc["rows"]:
        acc = " / ".join(f"{100 * v:.1f}%" for v in r["accuracy"].values())
        diffs = [v for v in (r.get("max_abs_logit_diff_vs_first") or {}).values() if v is not None]
        diff = "first row" if "max_abs_logit_diff_vs_first" not in r else (f"{max(diffs):.2g}" if diffs else "—")
        cells = [f"{r['stage_seconds'][s]:.1f}" if s in r["stage_seconds"] else "—" for s in stages]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['total_seconds']:.1f} | {acc} | {diff} |")
    lines += ["", "Mean per label:", "", "| label | " + " | ".join(stages) + " | total s |"]
    lines.append("|---" * (len(stages) + 2) + "|")
    for label, m in doc["means"].items():
        lines.append(f"| {label} | " + " | ".join(f"{m.get(s, 0.0):.1f}" for s in stages) + f" | {m['total']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.stage_times",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--collect", action="append", default=[], metavar="NAME=RUN_DIR", required=True)
    ap.add_argument("--label", action="append", default=[], metavar="LABEL=TEXT", help="what a label's runs are")
    ap.add_argument("--note", action="append", default=[], help="a line about how the runs were made")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    a = ap.parse_args(argv)
    rows, first = [], None
    for spec in a.collect:
        name, _, path = spec.partition("=")
        if not name or not path or not Path(path).is_dir():
            ap.error(f"--collect expects NAME=RUN_DIR with an existing run directory, got {spec!r}")
        try:
            row, logits = run_row(name, Path(path), first)
        except EdgekdError as e:  # not a finished run (no stages.json, no evaluate): one line, not a traceback
            ap.exit(2, f"error: --collect {spec}: {e}\n")
        first = logits if first is None else first
        rows.append(row)
    labels = {}
    for spec in a.label:
        label, _, text = spec.partition("=")
        if not label or not text:
            ap.error(f"--label expects LABEL=TEXT, got {spec!r}")
        labels[label] = text
    args = sys.argv[1:] if argv is None else argv
    doc = {
        "command": " ".join(["python -m edgekd.benchmarks.stage_times", *map(shlex.quote, args)]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_summary(),
        "labels": labels,
        "notes": a.note,
        "rows": rows,
        "means": group_means(rows),
    }
    write_results(a.out, doc, render_markdown(doc))
    print(f"{len(rows)} row(s): {a.out}.md, {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
