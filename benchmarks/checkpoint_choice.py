"""Which weights of a training to ship: the best epoch on the validation split (what a run keeps) or the last
epoch of the cosine schedule, measured on the test split of finished runs without training again.

    python -m edgekd.benchmarks.checkpoint_choice --collect NAME=RUN_DIR [--collect ...] --out benchmarks/results/NAME

Every student and baseline seed of a run keeps its best-on-validation weights (model.safetensors) and its
training checkpoint (checkpoint.pt, written after each epoch: the last epoch's weights once training ended).
Both are evaluated on the run's test split. Per run and kind, the last-minus-best difference over seeds gets
its paired bootstrap 95% interval over test images and McNemar's p (edgekd.pipeline.verdict), and the KD gain
(student − baseline) is given under either rule. A seed without a finished checkpoint is left out and named.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgekd.benchmarks.compare import write_results
from edgekd.pipeline import stages
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.machine import summary as machine_summary
from edgekd.pipeline.models import build_student
from edgekd.pipeline.rundir import RunDir, read_json
from edgekd.pipeline.train import predict_many
from edgekd.pipeline.verdict import kd_verdict

KINDS = ("student", "baseline")
RULES = ("best_val", "last")


def last_weights(seed_dir: Path, epochs: int) -> Optional[dict]:
    """The last epoch's weights from checkpoint.pt, or None when there is none or training stopped early."""
    ck = seed_dir / "checkpoint.pt"
    if not ck.is_file():
        return None
    state = torch.load(ck, map_location="cpu", weights_only=True)
    return state["model"] if state.get("epoch", -1) + 1 >= epochs else None


def run_rows(name: str, run_dir: Path) -> dict:
    """Test results of both rules for every seed of student and baseline of one finished run."""
    run = RunDir(run_dir)
    run.require(run.metrics, "not a finished run directory (run the evaluate stage first)")
    cfg, data = run.config(), load_split(run)
    k, s = len(data.classes), cfg.student
    models, seeds, missing = {}, {}, []
    for kind in KINDS:
        for i in range(cfg.train.seeds):
            d = stages.student_seed_dir(run, kind, i)
            hist = read_json(d / "history.json")
            last = last_weights(d, len(hist["history"]))
            if last is None:
                missing.append(f"{kind} seed {i}")
                continue
            net = build_student(s.arch, k, s.width_mult, s.dropout)
            net.load_state_dict(last)
            models[f"{kind}:{i}:best_val"] = stages.load_student(cfg, run, k, kind, seed_index=i)
            models[f"{kind}:{i}:last"] = net.eval()
            seeds.setdefault(kind, []).append((i, hist["best_epoch"], len(hist["history"])))
    y = torch.as_tensor(data.labels("test"))
    out = predict_many(models, stages.eval_images(run, data, cfg, "test"), desc=f"{name}: test")
    correct = {key: (lg.argmax(1) == y).numpy() for key, lg in out.items()}
    row: dict = {"name": name, "run_dir": str(run_dir), "test_images": int(len(y)), "missing": missing, "kinds": {}}
    for kind, got in seeds.items():
        per_seed = [
            {
                "seed_index": i,
                "best_epoch": best_epoch,
                "epochs": epochs,
                **{f"{rule}_accuracy": float(correct[f"{kind}:{i}:{rule}"].mean()) for rule in RULES},
                # per test image, as teacher_ablation stores it: other comparisons can pair these later
                **{
                    f"{rule}_correct": "".join("1" if ok else "0" for ok in correct[f"{kind}:{i}:{rule}"])
                    for rule in RULES
                },
            }
            for i, best_epoch, epochs in got
        ]
        stack = {rule: np.stack([correct[f"{kind}:{i}:{rule}"] for i, _, _ in got]) for rule in RULES}
        v = kd_verdict(stack["last"], stack["best_val"])  # "student" = last, "baseline" = best_val
        row["kinds"][kind] = {
            "seeds": per_seed,
            **{f"{rule}_mean": float(stack[rule].mean()) for rule in RULES},
            "last_minus_best_pts": v["kd_gain_mean"],
            "ci95": v["kd_gain_ci95"],
            "mcnemar_p": v["mcnemar_p"],
        }
    both = sorted({i for i, _, _ in seeds.get("student", [])} & {i for i, _, _ in seeds.get("baseline", [])})
    if both:
        row["kd_gain"] = {}
        for rule in RULES:
            v = kd_verdict(
                np.stack([correct[f"student:{i}:{rule}"] for i in both]),
                np.stack([correct[f"baseline:{i}:{rule}"] for i in both]),
            )
            row["kd_gain"][rule] = {"seeds": both, "pts": v["kd_gain_mean"], "ci95": v["kd_gain_ci95"]}
    return row


def render_markdown(doc: dict) -> str:
    lines = [
        f"# Checkpoint choice: best validation epoch or last epoch ({doc['date']})",
        "",
        f"- command: `{doc['command']}`",
        f"- machine: {doc['machine']}",
        "- test accuracy, mean over the seeds that have both; last − best in points with its paired bootstrap 95% "
        "interval over test images and McNemar's p (seed 0); KD gain = student − baseline under each rule",
        "",
        "| run | model | seeds | best-val epoch / epochs | best val | last | last − best (pts) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        for kind, m in r["kinds"].items():
            ep = ", ".join(f"{s['best_epoch']}/{s['epochs']}" for s in m["seeds"])
            lo, hi = m["ci95"]
            lines.append(
                f"| {r['name']} | {kind} | {len(m['seeds'])} | {ep} | {m['best_val_mean'] * 100:.1f}% "
                f"| {m['last_mean'] * 100:.1f}% | {m['last_minus_best_pts']:+.1f} [{lo:+.1f}, {hi:+.1f}] "
                f"p={m['mcnemar_p']:.2g} |"
            )
    lines += ["", "| run | seeds | KD gain, best val (pts) | KD gain, last (pts) |", "|---|---|---|---|"]
    for r in doc["rows"]:
        g = r.get("kd_gain")
        if g:
            cells = [f"{g[rule]['pts']:+.1f} [{g[rule]['ci95'][0]:+.1f}, {g[rule]['ci95'][1]:+.1f}]" for rule in RULES]
            lines.append(f"| {r['name']} | {len(g['best_val']['seeds'])} | {cells[0]} | {cells[1]} |")
    missing = [f"{r['name']}: {', '.join(r['missing'])}" for r in doc["rows"] if r["missing"]]
    if missing:
        lines += ["", "Left out (no finished checkpoint.pt): " + "; ".join(missing)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.checkpoint_choice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--collect", action="append", required=True, metavar="NAME=RUN_DIR")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.collect:
        name, _, path = spec.partition("=")
        if not name or not path:
            ap.error(f"--collect expects NAME=RUN_DIR, got {spec!r}")
        try:
            rows.append(run_rows(name, Path(path)))
        except EdgekdError as e:
            ap.exit(2, f"checkpoint_choice: --collect {spec}: {e}\n")
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m edgekd.benchmarks.checkpoint_choice "
        + " ".join(shlex.quote(x) for x in argv or sys.argv[1:]),
        "machine": machine_summary(),
        "rows": rows,
    }
    write_results(a.out, doc, render_markdown(doc))
    print(f"checkpoint_choice: {a.out}.md, .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
