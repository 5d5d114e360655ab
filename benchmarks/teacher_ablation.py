"""Teacher ablation: the test accuracy of teachers trained in finished run directories, side by side.

    python -m edgekd.benchmarks.teacher_ablation --collect NAME=RUN_DIR [--collect ...]
                                                 [--out benchmarks/results/teacher-ablation-full]

A teacher bounds what its student can learn from it, and a stronger one costs training time and a dearer
soft-labels pass, so each teacher setting is measured on its own before students are trained on it. Every row
is the run's teacher (`teacher/model.safetensors`, at its own input size) on the run's test split, with its
settings from the run's config.yaml and its fine-tuning seconds. Rows of an earlier invocation are kept.

One test accuracy carries about +-1.7 points of noise on ELPV, so each row is also compared with a reference row
(`--reference NAME`, default the first) on the same test images: the paired difference in points, its bootstrap
95% interval over test images and McNemar's p (edgekd.pipeline.verdict), from the per-image results each row
stores. Rows on another test split (another data fingerprint) are not compared.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgekd.benchmarks.compare import write_results
from edgekd.benchmarks.kd_ablation import keep_earlier_rows
from edgekd.pipeline.config import load_config, teacher_size
from edgekd.pipeline.data import load_split
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.evaluate import classification_metrics
from edgekd.pipeline.machine import summary as machine_summary
from edgekd.pipeline.rundir import RunDir, fingerprint, read_json
from edgekd.pipeline.verdict import mcnemar_p, paired_bootstrap_ci

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
    y = data.labels("test")
    logits = predict_logits(teacher, x, desc=f"test {name}").numpy()
    m = classification_metrics(logits, y, data.classes)
    test = data.subset("test")
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
            "balanced_sampler": cfg.data.balance,
        },
        "params": meta.get("params"),
        "train_seconds": _train_seconds(meta),
        "test_images": len(test),
        # which test images (by content) the row is measured on, and which it got right ("1"/"0" per image):
        # what a paired comparison between rows needs
        "test_fingerprint": fingerprint("test split", [(it.key, it.sha256) for it in test]),
        "correct": "".join("1" if ok else "0" for ok in logits.argmax(1) == y),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_recall": m["per_class_recall"],
    }


def compare_to(rows: list[dict], reference: str) -> None:
    """Adds `vs_reference` to every row measured on the reference row's test images: the paired difference
    in points (row - reference), its bootstrap 95% interval over test images and McNemar's p."""
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is None:
        raise SystemExit(f"--reference {reference}: no row of that name (rows: {', '.join(r['name'] for r in rows)})")
    for r in rows:
        r.pop("vs_reference", None)
        if r is ref or "correct" not in r or r.get("test_fingerprint") != ref.get("test_fingerprint"):
            continue
        a = np.frombuffer(r["correct"].encode(), np.uint8) - ord("0")
        b = np.frombuffer(ref["correct"].encode(), np.uint8) - ord("0")
        lo, hi = paired_bootstrap_ci(a, b)
        r["vs_reference"] = {
            "reference": reference,
            "gain_pts": round(100 * float(a.mean() - b.mean()), 2),
            "ci95": [round(lo, 2), round(hi, 2)],
            "mcnemar_p": round(mcnemar_p(a, b), 4),
        }


def render_markdown(doc: dict) -> str:
    lines = [
        f"# Teacher ablation ({doc['date']})",
        "",
        f"- command: `{doc['command']}`",
        f"- machine: {doc['machine']}",
        "- each teacher on its run's test split at its own input size; fine-tuning seconds on a 2-core machine "
        "shared with other jobs (upper bounds)",
        f"- vs {doc['reference']}: the row's accuracy minus the reference row's on the same test images, in "
        "points, with its paired bootstrap 95% interval over test images and McNemar's p",
        "- epochs: head-only + whole-network fine-tuning epochs; sampler: class-balanced (data.balance) or natural",
        "",
        f"| row | px | members | flips | epochs | sampler | test acc | vs {doc['reference']} (pts) | macro-F1 | "
        "recall per class | fine-tune |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        s = r["settings"]
        rec = " / ".join(f"{v:.2f}" for v in r["per_class_recall"].values())
        secs = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") is not None else "—"
        sampler = {True: "balanced", False: "natural"}.get(s.get("balanced_sampler"), "—")
        v = r.get("vs_reference")
        vs = "reference" if r["name"] == doc["reference"] else "—"
        if v:
            vs = f"{v['gain_pts']:+.1f} [{v['ci95'][0]:+.1f}, {v['ci95'][1]:+.1f}] p={v['mcnemar_p']:.2g}"
        lines.append(
            f"| {r['name']} | {s['image_size']} | {'+'.join(s['ensemble'])} | {'yes' if s['tta_flips'] else 'no'} | "
            f"{s['epochs']} | {sampler} | {100 * r['accuracy']:.1f}% | {vs} | {r['macro_f1']:.3f} | {rec} | {secs} |"
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
    ap.add_argument("--reference", help="row the others are compared with (default: the first row)")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.collect:
        name, _, path = spec.partition("=")
        if not name or not path or not Path(path).is_dir():
            ap.error(f"--collect expects NAME=RUN_DIR with an existing run directory, got {spec!r}")
        try:
            rows.append(teacher_row(name, Path(path)))
        except EdgekdError as e:  # not a finished run (no config, no teacher): one line, not a traceback
            ap.exit(2, f"error: --collect {spec}: {e}\n")
    for r in rows:
        r["collected"] = time.strftime("%Y-%m-%d")
    old = Path(f"{a.out}.json")
    rows = keep_earlier_rows(old, rows)
    reference = a.reference or rows[0]["name"]
    # the command that makes the whole file again, earlier rows included (each row is measured anew)
    command = " ".join(
        ["python -m edgekd.benchmarks.teacher_ablation"]
        + [f"--collect {shlex.quote(r['name'] + '=' + r['run_dir'])}" for r in rows]
        + ([f"--reference {shlex.quote(reference)}"] if reference != rows[0]["name"] else [])
        + [f"--out {shlex.quote(str(a.out))}"]
    )
    doc = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_summary(),
        "rows": rows,
        "reference": reference,
    }
    compare_to(rows, reference)
    write_results(a.out, doc, render_markdown(doc))
    print(f"{len(rows)} row(s): {a.out}.md, {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
