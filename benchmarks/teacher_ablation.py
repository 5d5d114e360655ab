"""Teacher ablation: the test accuracy of teachers trained in finished run directories, side by side.

    python -m edgekd.benchmarks.teacher_ablation --collect NAME=RUN_DIR [--collect ...]
                                                 [--out benchmarks/results/teacher-ablation-full]

A teacher bounds what its student can learn from it, and a stronger one costs training time and a dearer
soft-labels pass, so each teacher setting is measured on its own before students are trained on it. Every row
is the run's teacher (`teacher/model.safetensors`, at its own input size) on the run's test split, with its
settings from the run's config.yaml and its fine-tuning seconds. Rows of an earlier invocation are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from edgekd.benchmarks.kd_ablation import keep_earlier_rows
from edgekd.pipeline.config import load_config, teacher_size
from edgekd.pipeline.data import load_split
from edgekd.pipeline.evaluate import classification_metrics
from edgekd.pipeline.machine import summary as machine_summary
from edgekd.pipeline.rundir import RunDir, read_json

DEFAULT_OUT = Path("benchmarks/results/teacher-ablation-full")


def _train_seconds(meta: dict) -> Optional[float]:
    """Fine-tuning seconds of the teacher: its own, or the sum over ensemble members."""
    tr = meta.get("train") or {}
    if "members" in tr:
        secs = [m.get("seconds") for m in tr["members"]]
        return None if any(s is None for s in secs) else round(sum(secs), 1)
    return round(tr["seconds"], 1) if tr.get("seconds") is not None else None


def teacher_row(name: str, run_dir: Path) -> dict:
    from edgekd.pipeline import stages
    from edgekd.pipeline.train import predict_logits

    run = RunDir(run_dir)
    cfg = load_config(run.root / "config.yaml")
    data = load_split(run)
    meta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
    teacher = stages.load_teacher(cfg, run, len(data.classes))
    x = stages.eval_images(run, data, cfg, "test", teacher_size(cfg))  # read a batch at a time
    m = classification_metrics(
        predict_logits(teacher, x, desc=f"test {name}").numpy(), data.labels("test"), data.classes
    )
    t = cfg.teacher
    return {
        "name": name,
        "run_dir": str(run_dir),
        "arch": meta["arch"],
        "settings": {
            "image_size": teacher_size(cfg),
            "ensemble": list(t.ensemble) or [t.arch],
            "tta_flips": t.tta_flips,
            "freeze_blocks": t.freeze_blocks,
            "epochs": t.head_epochs + t.epochs,
            "lr": t.lr,
            "crop_scale": list(cfg.train.crop_scale),
        },
        "params": meta.get("params"),
        "train_seconds": _train_seconds(meta),
        "test_images": int(len(data.labels("test"))),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_recall": m["per_class_recall"],
    }


def render_markdown(doc: dict) -> str:
    lines = [
        f"# Teacher ablation ({doc['date']})",
        "",
        f"- command: `{doc['command']}`",
        f"- machine: {doc['machine']}",
        "- each teacher on its run's test split at its own input size; fine-tuning seconds on a 2-core machine "
        "shared with other jobs (upper bounds)",
        "",
        "| row | teacher | px | members | flips | test acc | macro-F1 | recall per class | fine-tune |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        s = r["settings"]
        rec = " / ".join(f"{v:.2f}" for v in r["per_class_recall"].values())
        secs = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") is not None else "—"
        arch = r["arch"].replace("|", "\\|")  # a pipe inside a table cell
        lines.append(
            f"| {r['name']} | {arch} | {s['image_size']} | {'+'.join(s['ensemble'])} | "
            f"{'yes' if s['tta_flips'] else 'no'} | {100 * r['accuracy']:.1f}% | {r['macro_f1']:.3f} | {rec} | {secs} |"
        )
    lines += ["", "Run directories:", ""] + [f"- {r['name']}: `{r['run_dir']}`" for r in doc["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.teacher_ablation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--collect", action="append", default=[], metavar="NAME=RUN_DIR", required=True)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    rows = []
    for spec in a.collect:
        name, _, path = spec.partition("=")
        if not name or not path or not Path(path).is_dir():
            ap.error(f"--collect expects NAME=RUN_DIR with an existing run directory, got {spec!r}")
        rows.append(teacher_row(name, Path(path)))
    args = sys.argv[1:] if argv is None else argv
    doc = {
        "command": " ".join(["python -m edgekd.benchmarks.teacher_ablation", *args]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_summary(),
        "rows": rows,
    }
    old = Path(f"{a.out}.json")
    doc["rows"] = keep_earlier_rows(old, rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(doc, indent=1) + "\n")
    Path(f"{a.out}.md").write_text(render_markdown(doc))
    print(f"{len(rows)} row(s): {a.out}.md, {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
