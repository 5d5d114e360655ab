"""Generated image folders of many shapes, and the benchmark that runs the quick preset on each (issue 11).

    python -m edgekd.benchmarks.data_shapes [--shapes a,b] [--seeds 3] [--out benchmarks/results/data-shapes]
                                            [--work DIR] [--force] [--set KEY=VALUE ...]

For each shape in SHAPES (or --shapes) the script generates an ImageFolder (`make_dataset`), runs
`edgekd run --preset quick --stages data,...,evaluate` on it in a fresh process, reads RUN/report.json and
writes OUT.json (for programs) and OUT.md (for people): teacher, student and baseline accuracy and macro-F1,
the majority-class share, the KD verdict, the gates, stage seconds and wall time per shape. A failed run is a
row with its exit code and last error line. A shape whose run finished with the same settings is not run
again (--force reruns it).

The images: each class is a texture family (oriented grating, dot lattice, rings, checkerboard, pinwheel)
with a class-specific spatial frequency, variant (orientation, dot size, ring width, twist) and object
outline, drawn as one object of random position, scale, rotation and phase, with a class-biased but widely
jittered colour, over a cluttered background (low-frequency colour noise, random strokes) with pixel noise.
Orientations are chosen so that horizontal / vertical flips (the training augmentation) map every class
onto itself. A CNN learns them; mean-colour or nearest-class-mean classifiers on raw pixels do far worse.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from edgekd.benchmarks.compare import write_results
from edgekd.pipeline.config import load_config, parse_set
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.machine import summary as machine_summary

FAMILIES = ("grating", "dots", "rings", "checker", "pinwheel")
# spatial frequency levels, cycles per image width; the first classes of a family get the most different ones
FREQ_LEVELS = (4.0, 9.0, 6.0)
SPOKES = (4, 11, 7)  # the pinwheel's "frequency": spokes around the centre
MAX_CLASSES = 60  # distinct class definitions: families x frequency levels x 2 variants x 2 outlines
STAGES = "data,teacher,soft_labels,student,baseline,evaluate"
DEFAULT_OUT = Path("benchmarks/results/data-shapes")


@dataclass(frozen=True)
class Shape:
    """One generated data set: `images` in all, `classes` folders, `size` px squares, PIL `mode` L or RGB,
    `imbalance` = largest / smallest class (geometric decay between them; 1 is balanced)."""

    name: str
    images: int
    classes: int
    size: int
    mode: str
    imbalance: float = 1.0
    note: str = ""


# Five shapes that together span the ranges (48..2,500 images, 2..50 classes, balanced and 10:1,
# 28..512 px, L and RGB). The quick preset trains at its own 96 px and sizes its schedules by optimizer steps,
# so each shape costs about the same (about 6-7 minutes with --seeds 3 on 2 idle CPU cores): 30-35 minutes.
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("tens-2c-512px-rgb", 48, 2, 512, "RGB", 1.0, "tens of images, 2 classes, 512 px"),
        Shape("gray-5c-40px-imb10", 300, 5, 40, "L", 10.0, "like the issue's imbalanced grayscale set"),
        Shape("mnist-like-10c-28px", 1000, 10, 28, "L", 1.0, "28 px grayscale, balanced"),
        Shape("rgb-10c-64px", 600, 10, 64, "RGB", 1.0, "like the issue's first row"),
        Shape("rgb-50c-48px-imb10", 2500, 50, 48, "RGB", 10.0, "thousands of images, 50 classes, 10:1"),
    )
}


# ----------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class ClassSpec:
    family: str
    freq: float  # cycles per image width (pinwheel: spokes)
    variant: int  # 0/1: grating horizontal/vertical, dots small/large, rings thin/thick, checker 0/45 deg, twist
    outline: str  # "disk" or "square"
    hue: float  # colour bias, 0..1


def class_spec(c: int) -> ClassSpec:
    """The deterministic definition of class `c` (independent of the data set's seed and size)."""
    fam = c % len(FAMILIES)
    j = c // len(FAMILIES)
    level = j % len(FREQ_LEVELS)
    s = j // len(FREQ_LEVELS)
    freq = float(SPOKES[level] if FAMILIES[fam] == "pinwheel" else FREQ_LEVELS[level])
    return ClassSpec(FAMILIES[fam], freq, s % 2, ("disk", "square")[(s // 2) % 2], (0.618034 * c) % 1.0)


def class_name(c: int) -> str:
    return f"c{c:02d}_{class_spec(c).family}"


def class_counts(images: int, classes: int, imbalance: float = 1.0) -> list[int]:
    """Images per class: proportional to imbalance ** (-c / (classes - 1)) (class 0 the largest, the last one
    `imbalance` times smaller), rounded by largest remainder to sum to `images`, at least 2 each."""
    if not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be 2..{MAX_CLASSES}")
    if imbalance < 1:
        raise ValueError("imbalance is largest / smallest class, >= 1")
    if images < 2 * classes:
        raise ValueError(f"{images} images cannot give {classes} classes 2 images each")
    w = np.asarray([imbalance ** (-c / (classes - 1)) for c in range(classes)])
    exact = images * w / w.sum()
    counts = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - counts), kind="stable")[: images - counts.sum()]:
        counts[c] += 1
    while (counts < 2).any():  # tiny sets: the smallest classes borrow from the largest
        counts[np.argmin(counts)] += 1
        counts[np.argmax(counts)] -= 1
    return [int(n) for n in counts]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x right, y down)."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(t, t)


@lru_cache(maxsize=8)
def _upsample_matrix(size: int, coarse: int) -> np.ndarray:
    """(size, coarse) bilinear interpolation weights: A @ G @ A.T upsamples a coarse grid G."""
    pos = (np.arange(size) + 0.5) / size * (coarse - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, coarse - 2)
    f = pos - lo
    a = np.zeros((size, coarse), dtype=np.float32)
    a[np.arange(size), lo] = 1 - f
    a[np.arange(size), lo + 1] = f
    return a


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (h wraps) -> RGB in 0..1."""
    h = (h % 1.0) * 6
    i, f = int(h) % 6, h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.asarray([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _texture(spec: ClassSpec, xr: np.ndarray, yr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The class texture in 0..1 at rotated object coordinates (xr, yr)."""
    k = math.pi * spec.freq * rng.uniform(0.9, 1.1)  # cycles per width (2 units) -> radians per unit
    p1, p2 = rng.uniform(0, 2 * math.pi, 2)
    if spec.family == "grating":
        return _sigmoid(3.0 * np.cos(k * xr + p1))
    if spec.family == "dots":
        thr = (1.1, -0.2)[spec.variant]  # small / large dots
        return _sigmoid(4.0 * (np.cos(k * xr + p1) + np.cos(k * yr + p2) - thr))
    if spec.family == "rings":
        duty = (0.55, -0.55)[spec.variant]  # thin / thick bright rings
        return _sigmoid(5.0 * (np.cos(k * np.hypot(xr, yr) + p1) - duty))
    if spec.family == "checker":
        return _sigmoid(6.0 * np.cos(k * xr + p1) * np.cos(k * yr + p2))
    # pinwheel: spokes around the object's centre, straight or twisted (the twist's sign is random: flips)
    twist = (0.0, 2.5)[spec.variant] * rng.choice((-1.0, 1.0))
    ang = np.arctan2(yr, xr)
    return _sigmoid(3.0 * np.cos(spec.freq * ang + twist * math.pi * np.hypot(xr, yr) + p1))


def render(c: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image (size, size, 3) float32 in 0..1 of class `c`."""
    spec = class_spec(c)
    xx, yy = _grid(size)
    # background: a random low-saturation colour, low-frequency colour clutter, a few random strokes
    bg = _hsv(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.25, 0.75))
    a = _upsample_matrix(size, 5)
    clutter = np.stack([a @ g @ a.T for g in rng.normal(0, 0.12, (3, 5, 5)).astype(np.float32)], axis=-1)
    img = bg + clutter
    strokes = []
    for _ in range(rng.integers(1, 4)):
        p, q = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        strokes.append((p, q, rng.uniform(0.02, 0.08), _hsv(rng.uniform(), rng.uniform(0, 0.8), rng.uniform())))
    on_top = rng.uniform() < 0.5  # half the images have a stroke across the object
    for p, q, w, col in strokes[: len(strokes) - on_top]:
        img = _stroke(img, xx, yy, p, q, w, col, size)
    # the object: random centre, radius, rotation; class texture in two class-biased colours
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    radius = rng.uniform(0.45, 0.72)
    if spec.family == "grating":
        theta = (0.0, math.pi / 2)[spec.variant] + rng.normal(0, 0.08)
    elif spec.family == "checker":
        theta = (0.0, math.pi / 4)[spec.variant] + rng.normal(0, 0.08)
    else:
        theta = rng.uniform(0, 2 * math.pi)
    x, y = xx - cx, yy - cy
    ct, st = math.cos(theta), math.sin(theta)
    xr, yr = x * ct + y * st, -x * st + y * ct
    tex = _texture(spec, xr, yr, rng)[..., None]
    hue = spec.hue + rng.normal(0, 0.12)  # a colour bias, not a label: neighbouring classes overlap
    light = _hsv(hue, rng.uniform(0.4, 0.95), rng.uniform(0.65, 1.0))
    dark = _hsv(hue + rng.normal(0.5, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.4))
    obj = dark + (light - dark) * tex
    if spec.outline == "disk":
        d = np.hypot(x, y) / radius
    else:  # a square of the same area, rotated at random
        phi = rng.uniform(0, math.pi / 2)
        cp, sp = math.cos(phi), math.sin(phi)
        d = np.maximum(np.abs(x * cp + y * sp), np.abs(-x * sp + y * cp)) / (radius * 0.886)
    mask = _sigmoid((1 - d) * radius * size / 1.5)[..., None]  # edge about 1.5 px wide
    img = img * (1 - mask) + obj * mask
    if on_top:
        img = _stroke(img, xx, yy, *strokes[-1], size)
    img = (img - 0.5) * rng.uniform(0.75, 1.15) + 0.5 + rng.normal(0, 0.05)  # contrast, brightness
    img = img + rng.normal(0, 0.05, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def _stroke(img, xx, yy, p, q, width, colour, size) -> np.ndarray:
    """A line segment p-q of `width` (units of half the image) in `colour`, anti-aliased; drawn in place
    within its bounding box."""
    pad = width + 4.0 / size
    lo = np.clip(((np.minimum(p, q) - pad + 1) * size / 2).astype(int), 0, size)
    hi = np.clip(((np.maximum(p, q) + pad + 1) * size / 2).astype(int) + 1, 0, size)
    box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    x, y = xx[box], yy[box]
    d = q - p
    t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.hypot(x - p[0] - t * d[0], y - p[1] - t * d[1])
    m = _sigmoid((width - dist) * size / 1.5)[..., None]
    img[box] = img[box] * (1 - m) + colour * m
    return img


def to_pil(img: np.ndarray, mode: str) -> Image.Image:
    if mode == "L":  # ITU-R 601 luma, as PIL converts
        img = img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return Image.fromarray(np.round(img * 255).astype(np.uint8), mode)


def make_dataset(
    root: Path | str, *, images: int, classes: int, size: int, mode: str, imbalance: float = 1.0, seed: int = 0
) -> dict[str, int]:
    """Write an ImageFolder root/<class>/img_NNNNN.png (PNG, mode L or RGB) and return {class: images}.

    `classes` 2..MAX_CLASSES (each a distinct texture definition), `size` px squares,
    `imbalance` largest / smallest class. Deterministic from `seed`; image i of class c depends only on
    (seed, c, i), so growing a set keeps its first images. `root` must be empty or absent."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if not 8 <= size <= 4096:
        raise ValueError(f"size must be 8..4096 px, got {size}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    counts = class_counts(images, classes, imbalance)
    out = {}
    for c, n in enumerate(counts):
        d = root / class_name(c)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, c, i])
            to_pil(render(c, size, rng), mode).save(d / f"img_{i:05d}.png", compress_level=1)
        out[class_name(c)] = n
    return out


# ----------------------------------------------------------------------------------------
# the benchmark


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def model_summary(rep: dict, name: str) -> dict:
    """accuracy / macro_f1 of teacher, student or baseline from report.json (the mean over seeds where the run
    trained several), with their std over seeds (`accuracy_std`, None for one model) and per-seed values, and
    `agreement_teacher_train` (mean over seeds) where the run measured it."""
    m = rep.get(name) or {}
    out: dict = {}
    per_seed = m.get("per_seed") if isinstance(m.get("per_seed"), list) else []
    for key in ("accuracy", "macro_f1"):
        per = [r.get(key) for r in per_seed if isinstance(r, dict) and r.get(key) is not None]
        mean, sd = _mean_std(per)
        out[key] = m.get(key, mean)
        out[f"{key}_std"] = m.get(f"{key}_std", sd if len(per) > 1 else None)
        if per:
            out[f"{key}_per_seed"] = per
    # fidelity: agreement with the teacher on training images, the mean over seeds (report.json's own is seed 0's)
    fit = [
        r["agreement_teacher_train"]
        for r in per_seed
        if isinstance(r, dict) and r.get("agreement_teacher_train") is not None
    ]
    if fit:
        out["agreement_teacher_train"] = sum(fit) / len(fit)
    return out


def _child_env() -> dict:
    return dict(os.environ, EDGEKD_QUIET="1", OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


def run_command(data: Path, run: Path, seeds: Optional[int], sets: list[str]) -> list[str]:
    """The `edgekd run` command line of one shape (gate.max_accuracy_drop off: the table shows the gap)."""
    cmd = ["edgekd", "run", "--preset", "quick", "--data", str(data), "--out", str(run), "--stages", STAGES]
    cmd += ["--set", "gate.max_accuracy_drop=100"]
    if seeds is not None:
        cmd += ["--seeds", str(seeds)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def expected_config(data: Path, seeds: Optional[int], sets: list[str]) -> Optional[dict]:
    """The resolved config `run_command` gives (as report.json records it), None where it is not valid (the run
    will say why): a finished run with another config (other --set values, or a preset changed since) is stale."""
    overrides = {"stages": STAGES.split(",")}
    try:
        overrides = {**parse_set(["gate.max_accuracy_drop=100", *sets]), **overrides}
        overrides.setdefault("data", {})["source"] = str(data)
        if seeds is not None:
            overrides.setdefault("train", {})["seeds"] = seeds
        return load_config(None, "quick", overrides).model_dump(mode="json")
    except EdgekdError:
        return None


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"error|Error|failed|Traceback", ln):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def up_to_date(shape: Shape, key_file: Path, run: Path, config: Optional[dict]) -> Optional[dict]:
    """The saved outcome of an earlier run of this shape if it finished with the same shape and config."""
    if config is None or not key_file.exists() or not (run / "report.json").exists():
        return None
    prev = json.loads(key_file.read_text())
    rep = json.loads((run / "report.json").read_text())
    if prev.get("shape") != asdict(shape) or rep.get("config") != config:
        return None
    return prev


def run_shape(shape: Shape, work: Path, seeds: Optional[int], sets: list[str], force: bool = False) -> dict:
    """Generate the shape, run the quick preset on it (unless an identical run finished), and summarise it."""
    base = work / shape.name
    data, run, key_file = base / "data", base / "run", base / "benchmark.json"
    cmd = run_command(data, run, seeds, sets)
    config = expected_config(data, seeds, sets)
    prev = None if force else up_to_date(shape, key_file, run, config)
    if prev is not None:
        log(f"{shape.name}: up to date ({run / 'report.json'}), not rerun (--force reruns it)")
        return summarise(shape, cmd, run, prev["exit_code"], prev["wall_s"], prev.get("error", ""), prev["counts"])
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    t0 = time.time()
    counts = make_dataset(
        data, images=shape.images, classes=shape.classes, size=shape.size, mode=shape.mode, imbalance=shape.imbalance
    )
    log(
        f"{shape.name}: generated {shape.images} images, {shape.classes} classes, {shape.size} px {shape.mode}, "
        f"{shape.imbalance:g}:1 in {time.time() - t0:.1f}s; running {' '.join(cmd)}"
    )
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "edgekd", *cmd[1:]], capture_output=True, text=True, env=_child_env())
    wall = round(time.time() - t0, 1)
    (base / "stderr.txt").write_text(proc.stderr)
    err = _last_error(proc.stderr) if proc.returncode not in (0, 3) else ""
    outcome = {"shape": asdict(shape), "exit_code": proc.returncode, "wall_s": wall, "error": err, "counts": counts}
    key_file.write_text(json.dumps(outcome, indent=1) + "\n")
    row = summarise(shape, cmd, run, proc.returncode, wall, err, counts)
    st, mj = row["student"], row["majority_share"]
    log(
        f"{shape.name}: exit {proc.returncode} in {wall:.0f}s"
        + (
            f": {err}"
            if err
            else f"; teacher {_pct(row['teacher'].get('accuracy'))}, student {_pct(st.get('accuracy'))}, "
            f"baseline {_pct(row['baseline'].get('accuracy'))}, majority {_pct(mj)}"
        )
    )
    return row


def summarise(shape: Shape, cmd: list[str], run: Path, code: int, wall: float, err: str, counts: dict) -> dict:
    rep = json.loads((run / "report.json").read_text()) if (run / "report.json").exists() else {}
    data = rep.get("data") or {}
    n = sum(counts.values())
    row = {
        "shape": asdict(shape),
        "class_counts": counts,
        "command": " ".join(cmd),
        "exit_code": code,
        "error": err,
        "wall_s": wall,
        "majority_share": data.get("majority_class_share_test", round(max(counts.values()) / n, 4)),
        "teacher": model_summary(rep, "teacher"),
        "student": model_summary(rep, "student"),
        "baseline": model_summary(rep, "baseline"),
        "kd_gain_points": rep.get("kd_gain_points"),
        "kd_verdict": rep.get("kd_verdict"),
        "advice": rep.get("advice") or [],
        "gates": rep.get("gates"),
        "stage_seconds": rep.get("stages"),
        "run_dir": str(run),
    }
    return row


def log(msg: str) -> None:
    print(f"[data-shapes] {msg}", file=sys.stderr, flush=True)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}%"


def _acc(m: dict) -> str:
    if m.get("accuracy") is None:
        return "—"
    sd = m.get("accuracy_std")
    return _pct(m["accuracy"]) + ("" if sd is None else f" ± {100 * sd:.1f}")


def _f1(m: dict) -> str:
    return "—" if m.get("macro_f1") is None else f"{float(m['macro_f1']):.2f}"


def _margin(row: dict) -> str:
    acc, mj = row["student"].get("accuracy"), row.get("majority_share")
    return "—" if acc is None or mj is None else f"{100 * (float(acc) - float(mj)):+.1f}"


def _gain(row: dict) -> str:
    v = row.get("kd_verdict") or {}
    if v.get("kd_gain_mean") is not None:
        ci = v.get("kd_gain_ci95") or [None, None]
        txt = f"{float(v['kd_gain_mean']):+.1f}"
        if None not in ci:
            txt += f" [{float(ci[0]):+.1f}, {float(ci[1]):+.1f}]"
        if v.get("mcnemar_p") is not None:
            txt += f" p={float(v['mcnemar_p']):.2g}"
        return txt
    g = row.get("kd_gain_points")
    return "—" if g is None else f"{float(g):+.1f}"


def render_markdown(rows: list[dict], command: str, machine_line: str, date: str) -> str:
    lines = [
        f"# Quick preset on generated data of many shapes ({date})",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_line}",
        "- data: `edgekd.benchmarks.data_shapes.make_dataset` (texture families with class-specific frequency, "
        "variant and outline; random position, scale, rotation, phase and colour; background clutter and noise), "
        "seed 0; each run `edgekd run --preset quick` (the image size is the preset's, whatever the files' size)",
        "- accuracy: test split, mean ± std over seeds where the run has several; KD gain: student − baseline in "
        "points, with the paired bootstrap 95% interval and McNemar's p where the run has a verdict; "
        "majority: the test share of the commonest class (what always guessing it scores)",
        "",
        "| shape | images | classes | px | mode | imbalance | majority | teacher | student | baseline "
        "| student − majority (pts) | F1 teacher | F1 student | F1 baseline | KD gain (pts) | wall | exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        s = r["shape"]
        lines.append(
            f"| {s['name']} | {s['images']} | {s['classes']} | {s['size']} | {s['mode']} | {s['imbalance']:g}:1 "
            f"| {_pct(r['majority_share'])} | {_acc(r['teacher'])} | {_acc(r['student'])} | {_acc(r['baseline'])} "
            f"| {_margin(r)} | {_f1(r['teacher'])} | {_f1(r['student'])} | {_f1(r['baseline'])} | {_gain(r)} "
            f"| {r['wall_s'] / 60:.1f} min | {r['exit_code']} |"
        )
        if r.get("error"):
            notes.append(f"- {s['name']}: exit {r['exit_code']}: {r['error']}")
        failed = [g.get("message") or g.get("name") for g in (r.get("gates") or []) if not g.get("passed", True)]
        if failed and r["exit_code"] == 3:
            notes.append(f"- {s['name']}: gate failed: {'; '.join(str(f) for f in failed)}")
        conclusion = (r.get("kd_verdict") or {}).get("conclusion")
        lines_ = ([f"KD verdict: {conclusion}"] if conclusion else []) + list(r.get("advice", []))
        notes += [f"- {s['name']}: {line}" for line in lines_]
    total = sum(r["wall_s"] for r in rows)
    lines += ["", f"Total wall time {total / 60:.1f} min."]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgekd.benchmarks.data_shapes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--shapes", help=f"comma-separated names (default all: {', '.join(SHAPES)})")
    ap.add_argument("--seeds", type=int, help="student + baseline seeds per shape (the KD verdict needs >= 2)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md (default %(default)s)")
    ap.add_argument("--work", type=Path, help="data and run folders (default: OUT's name under runs/)")
    ap.add_argument("--force", action="store_true", help="rerun shapes whose results are up to date")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    a = ap.parse_args(argv)
    names = a.shapes.split(",") if a.shapes else list(SHAPES)
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {', '.join(unknown)}; shapes are {', '.join(SHAPES)}")
    work = a.work or Path("runs") / a.out.name
    t0 = time.time()
    rows = []
    for i, name in enumerate(names):
        log(f"shape {i + 1}/{len(names)}: {name}")
        rows.append(run_shape(SHAPES[name], work, a.seeds, a.sets, a.force))
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m edgekd.benchmarks.data_shapes", *(shlex.quote(x) for x in args)])
    date = time.strftime("%Y-%m-%d")
    machine_line = machine_summary()
    doc = {"command": command, "date": date, "machine": machine_line, "seeds": a.seeds, "shapes": rows}
    write_results(a.out, doc, render_markdown(rows, command, machine_line, date))
    log(f"{len(rows)} shape(s) in {(time.time() - t0) / 60:.1f} min: {a.out}.md, {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
