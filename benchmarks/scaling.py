"""Throughput of soft-label generation and distillation for 1..N processes (issue: scale-out).

    python -m edgekd.benchmarks.scaling --base RUN_DIR [--nproc 1,2] [--epochs 2] [--out benchmarks/results/scaling.md]

RUN_DIR must hold a finished teacher (e.g. a quick run). For each process count the script copies
the run, drops soft labels and student, reruns `soft_labels,student` under torchrun, and reads the
stage wall times from stages.json: images/s = images processed / stage seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekd.pipeline.machine import describe
from edgekd.pipeline.rundir import read_json


def measure(base: Path, nproc: int, epochs: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        shutil.copytree(
            base, out, ignore=shutil.ignore_patterns("exports", "bench", "soft_labels", "student", "baseline", "eval")
        )
        st = read_json(out / "stages.json")
        for k in ("soft_labels", "student", "baseline", "evaluate"):
            st.pop(k, None)
        (out / "stages.json").write_text(json.dumps(st))
        cmd = [
            sys.executable,
            "-m",
            "edgekd",
            "run",
            "--out",
            str(out),
            "--nproc-per-node",
            str(nproc),
            "--config",
            str(out / "config.yaml"),
            "--stages",
            "soft_labels,student",
            "--set",
            f"train.epochs={epochs}",
            "--set",
            f"train.device={device}",
        ]
        env = dict(os.environ, EDGEKD_QUIET="1")
        t0 = time.time()
        subprocess.run(cmd, check=True, env=env)
        wall = time.time() - t0
        st = read_json(out / "stages.json")
        n = sum(1 for it in read_json(out / "data" / "split.json")["items"] if it["split"] == "train")
        return {
            "nproc": nproc,
            "train_images": n,
            "epochs": epochs,
            "wall_s": round(wall, 1),
            "soft_labels_s": st["soft_labels"]["seconds"],
            "student_s": st["student"]["seconds"],
            "soft_labels_img_per_s": round(n / st["soft_labels"]["seconds"], 1),
            "distill_img_per_s": round(n * epochs / st["student"]["seconds"], 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--nproc", default="1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = [measure(a.base, int(n), a.epochs, a.device) for n in a.nproc.split(",")]
    cfg = read_json(a.base / "report.json")["config"] if (a.base / "report.json").exists() else {}
    m = describe()
    lines = [
        f"# Scale-out throughput ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python -m edgekd.benchmarks.scaling --base {a.base} --nproc {a.nproc} --epochs {a.epochs} "
        f"--device {a.device}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, GPU: {m['gpu']}. "
        f"Image size {cfg.get('data', {}).get('image_size')}, teacher {cfg.get('teacher', {}).get('arch')}, "
        f"student {cfg.get('student', {}).get('arch')}, "
        f"global batch {cfg.get('train', {}).get('batch_size')}.",
        "",
        "| processes | train images | soft labels (img/s) | distillation (img/s) | soft labels (s) | distill (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nproc']} | {r['train_images']} | {r['soft_labels_img_per_s']} | "
            f"{r['distill_img_per_s']} | "
            f"{r['soft_labels_s']} | {r['student_s']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
