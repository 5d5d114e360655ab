"""The distillation ablation on ELPV (issue 12): one row per change, several seeds each, the command behind it.

    python -m edgekd.benchmarks.kd_ablation [--preset quick] [--rows a,b] [--seeds 3] [--set KEY=VALUE ...]
                                            [--out benchmarks/results/kd-ablation] [--work DIR] [--force]

A base run (`edgekd run --stages data,teacher`) trains the teacher once; every row is a copy of it run with
`edgekd run --stages data,...,evaluate --seeds N` plus the row's `--set` values, in a fresh process. What a row
shares with an earlier one (teacher, soft labels, baselines with the same training settings) is found by the
stages' fingerprints and not trained again: trained baselines and soft labels are handed back to the base run
after each row. A finished row whose config is unchanged is not rerun (--force reruns it).

Each row reports teacher, student and baseline accuracy and macro-F1 (mean ± std over seeds), the KD gain
with its paired bootstrap 95% interval and McNemar's p, and the seconds of every stage.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgekd.benchmarks.compare import write_results
from edgekd.benchmarks.data_shapes import _child_env, _gain, _last_error, model_summary
from edgekd.pipeline.config import load_config, sets_against_preset
from edgekd.pipeline.machine import summary as machine_summary

STAGES = "data,teacher,soft_labels,student,baseline,evaluate"
DEFAULT_OUT = Path("benchmarks/results/kd-ablation")


@dataclass(frozen=True)
class Row:
    name: str
    change: str
    sets: tuple[str, ...]


# In the order they build on each other: the fixed teacher (logits of the un-augmented image) first.
ROWS = {
    r.name: r
    for r in (
        Row("fixed", "teacher logits of the un-augmented image (before issue 12)", ("kd.cache_views=0",)),
        Row(
            "views8",
            "8 cached augmented views per image, replayed exactly (consistent teaching)",
            ("kd.cache_views=8",),
        ),
        Row(
            "views8-mix",
            "8 views, each a mixup of two training images labelled by the teacher (function matching)",
            ("kd.cache_views=8", "train.mixup=0.4"),
        ),
        Row(
            "views8-mix-T1",
            "as views8-mix with alpha 0.9 and T 1 (the teacher's own distribution of each mixed view)",
            ("kd.cache_views=8", "train.mixup=0.4", "kd.temperature=1.0"),
        ),
        Row(
            "views16-mix",
            "16 mixed views per image",
            ("kd.cache_views=16", "train.mixup=0.4"),
        ),
        Row("nobalance-views8", "8 views, no class-balanced sampler", ("kd.cache_views=8", "data.balance=false")),
        Row(
            "views8-T4",
            "8 views, alpha 0.9 / T 4 fixed (the classic setting)",
            ("kd.cache_views=8", "kd.alpha=0.9", "kd.temperature=4"),
        ),
        Row(
            "views8-ens",
            "8 views, teacher = Lite2 + Lite1 ensemble, flip-averaged (a stronger teacher)",
            ("kd.cache_views=8", "teacher.ensemble=[efficientnet_lite2,efficientnet_lite1]"),
        ),
        Row(
            "views8-T4-60ep",
            "8 views, alpha 0.9 / T 4, 60 epochs (student and baseline: a patient schedule)",
            ("kd.cache_views=8", "kd.alpha=0.9", "kd.temperature=4", "train.epochs=60"),
        ),
        Row(
            "views8-T1",
            "8 views, alpha 0.9 / T 1 (the teacher's own distribution: sharper targets for a student that underfits)",
            ("kd.cache_views=8", "kd.alpha=0.9", "kd.temperature=1"),
        ),
        Row(
            "views8-auto",
            "8 views, alpha / T chosen on the validation split (kd auto)",
            ("kd.cache_views=8", "kd.alpha=auto", "kd.temperature=auto"),
        ),
    )
}


def log(msg: str) -> None:
    print(f"[kd-ablation] {msg}", file=sys.stderr, flush=True)


def _edgekd(args: list[str]) -> tuple[int, float, str]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, env=_child_env())
    return p.returncode, round(time.time() - t0, 1), p.stderr


def _sets(preset_sets: list[str], row_sets: tuple[str, ...]) -> list[str]:
    out = []
    for s in [*preset_sets, *row_sets, "gate.max_accuracy_drop=100"]:
        out += ["--set", s]
    return out


def _hand_back(row_dir: Path, base: Path) -> None:
    """Trained baselines and soft labels go back to the base run so that later rows with the same settings find
    them (their fingerprints decide whether they are reused)."""
    st_row = json.loads((row_dir / "stages.json").read_text())
    st_base = json.loads((base / "stages.json").read_text())
    for name, rec in st_row.items():
        if name.endswith("baseline") and (row_dir / name / "model.safetensors").exists():
            if st_base.get(name, {}).get("fingerprint") != rec["fingerprint"]:
                shutil.copytree(row_dir / name, base / name, dirs_exist_ok=True)
                st_base[name] = rec
    for d in (row_dir / "soft_labels").glob("*"):
        if not (base / "soft_labels" / d.name).exists():
            shutil.copytree(d, base / "soft_labels" / d.name)
    (base / "stages.json").write_text(json.dumps(st_base, indent=1))


def run_row(row: Row, preset: str, seeds: int, preset_sets: list[str], work: Path, force: bool) -> dict:
    base, out = work / "base", work / row.name
    cmd = ["run", "--preset", preset, "--out", str(out), "--stages", STAGES, "--seeds", str(seeds)]
    cmd += _sets(preset_sets, row.sets)
    key = {"cmd": cmd}
    done = out / "ablation.json"
    if (
        not force
        and done.exists()
        and json.loads(done.read_text()).get("key") == key
        and (out / "report.json").exists()
    ):
        log(f"{row.name}: up to date, not rerun")
        outcome = json.loads(done.read_text())
    else:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("checkpoint.pt"))
        log(f"{row.name}: edgekd {' '.join(cmd)}")
        code, wall, err = _edgekd(cmd)
        (out / "stderr.txt").write_text(err)
        outcome = {
            "key": key,
            "exit_code": code,
            "wall_s": wall,
            "error": _last_error(err) if code not in (0, 3) else "",
        }
        done.write_text(json.dumps(outcome, indent=1))
        if code in (0, 3):
            _hand_back(out, base)
    r = summarise(row, "edgekd " + " ".join(shlex.quote(c) for c in cmd), out, outcome)
    log(f"{row.name}: exit {r['exit_code']} in {r['wall_s']:.0f}s; KD gain {_gain(r)}")
    return r


def summarise(row: Row, command: str, out: Path, outcome: dict) -> dict:
    """One table row from a finished run directory (its report.json and stages.json)."""
    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    student = rep.get("student") or {}
    return {
        "name": row.name,
        "change": row.change,
        "command": command,
        "exit_code": outcome["exit_code"],
        "error": outcome.get("error", ""),
        "wall_s": outcome["wall_s"],
        "teacher": model_summary(rep, "teacher"),
        "student": model_summary(rep, "student"),
        "baseline": model_summary(rep, "baseline"),
        "student_per_class_recall": student.get("per_class_recall"),
        "kd_verdict": rep.get("kd_verdict"),
        "stage_seconds": rep.get("stages"),
        "run_dir": str(out),
    }


def collect(spec: str, preset: str, seeds: int) -> dict:
    """`NAME=RUN_DIR`: a row from a run made by hand with the row's settings (`edgekd run --preset P --seeds N`
    plus the row's --set values); its wall time is the sum of the stage seconds in stages.json. Its command
    sets every setting in which the run's config.yaml differs from the preset today, so it rebuilds the run
    after a preset changed."""
    name, _, path = spec.partition("=")
    if name not in ROWS or not path:
        raise SystemExit(f"--collect expects NAME=RUN_DIR with NAME one of {', '.join(ROWS)}")
    out = Path(path)
    stages = json.loads((out / "stages.json").read_text())
    wall = round(sum(float(v.get("seconds") or 0) for v in stages.values()), 1)
    row = ROWS[name]
    cfg = load_config(out / "config.yaml")
    if cfg.preset != preset:
        raise SystemExit(f"--collect {spec}: that run used the {cfg.preset} preset, not --preset {preset}")
    cmd = ["edgekd", "run", "--preset", preset, "--out", str(out), "--seeds", str(seeds)]
    for item in sets_against_preset(cfg):
        cmd += ["--set", item]
    return summarise(row, " ".join(shlex.quote(c) for c in cmd), out, {"exit_code": 0, "wall_s": wall})


def keep_earlier_rows(path: Path, rows: list[dict], same: Callable[[dict], bool] = lambda prev: True) -> list[dict]:
    """The rows of the earlier results file at `path` that `rows` does not replace (by name), then `rows`: one
    file holds the whole ablation. `rows` itself when there is no earlier file or `same(earlier doc)` is false."""
    if not path.exists():
        return rows
    prev = json.loads(path.read_text())
    if not same(prev):
        return rows
    mine = {r["name"] for r in rows}
    return [r for r in prev.get("rows", []) if r["name"] not in mine] + rows


def _ms(m: dict, key: str = "accuracy", scale: float = 100.0, fmt: str = "{:.1f}") -> str:
    v = m.get(key)
    if v is None:
        return "—"
    s = fmt.format(v * scale)
    sd = m.get(f"{key}_std")
    return s + (f" ± {fmt.format(sd * scale)}" if sd else "")


def render_markdown(doc: dict) -> str:
    lines = [
        f"# Distillation ablation, ELPV 4-class, {doc['preset']} preset ({doc['date']})",
        "",
        f"- command: `{doc['command']}`",
        f"- machine: {doc['machine']}",
        f"- base run (teacher trained once, shared by every row): `{doc['base_command']}`",
        "- accuracy and macro-F1 on the 656-image test split, mean ± std over seeds; KD gain = student − baseline "
        "in points with its paired bootstrap 95% interval and McNemar's p (edgekd.pipeline.verdict); wall: the "
        "row's own `edgekd run` (reused stages cost nothing); student fit: the KD student's top-1 agreement with "
        "the teacher on its training images, % (mean over seeds; under 90 it underfits the teacher)",
        "",
        "| row | change | teacher | student acc | baseline acc | student F1 | baseline F1 | student fit "
        "| KD gain (pts) | wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['name']} | {r['change']} | {_ms(r['teacher'])} | {_ms(r['student'])} | {_ms(r['baseline'])} "
            f"| {_ms(r['student'], 'macro_f1', 1, '{:.2f}')} | {_ms(r['baseline'], 'macro_f1', 1, '{:.2f}')} "
            f"| {_ms(r['student'], 'agreement_teacher_train')} | {_gain(r)} | {r['wall_s'] / 60:.1f} min |"
        )
    lines += ["", "Commands:", ""]
    lines += [
        f"- {r['name']}: `{r['command']}`" + (f" (exit {r['exit_code']}: {r['error']})" if r["error"] else "")
        for r in doc["rows"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.kd_ablation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--rows", help=f"comma-separated (default all: {', '.join(ROWS)})")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, help="run folders (default runs/<out name>-<preset>)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="for every row")
    ap.add_argument(
        "--collect",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="add the row NAME from a finished run directory instead of running it (repeatable)",
    )
    a = ap.parse_args(argv)
    names = a.rows.split(",") if a.rows else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; rows are {', '.join(ROWS)}")
    work = a.work or Path("runs") / f"{a.out.name}-{a.preset}"
    base_cmd = ["run", "--preset", a.preset, "--out", str(work / "base"), "--stages", "data,teacher"]
    base_cmd += _sets(a.sets, ())
    t0 = time.time()
    rows = [collect(c, a.preset, a.seeds) for c in a.collect]
    if a.rows or not a.collect:
        code, wall, err = _edgekd(base_cmd)
        if code != 0:
            log(f"base run failed (exit {code}): {_last_error(err)}")
            return code
        log(f"base run (data, teacher) in {wall:.0f}s")
        rows += [run_row(ROWS[n], a.preset, a.seeds, a.sets, work, a.force) for n in names]
    args = sys.argv[1:] if argv is None else argv
    doc = {
        "command": " ".join(["python -m edgekd.benchmarks.kd_ablation", *(shlex.quote(x) for x in args)]),
        "base_command": "edgekd " + " ".join(shlex.quote(c) for c in base_cmd)
        if (a.rows or not a.collect)
        else "none: every row collected from a finished run directory (--collect); wall = the sum of its stage seconds",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_summary(),
        "preset": a.preset,
        "seeds": a.seeds,
        "rows": rows,
    }
    old = Path(f"{a.out}.json")
    doc["rows"] = keep_earlier_rows(old, rows, same=lambda prev: prev.get("preset") == a.preset)
    if doc["rows"] is not rows:
        doc["rows"].sort(key=lambda r: list(ROWS).index(r["name"]) if r["name"] in ROWS else 99)
    write_results(a.out, doc, render_markdown(doc))
    log(f"{len(rows)} row(s) in {(time.time() - t0) / 60:.1f} min: {a.out}.md, {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
