"""Cost of the data path as the number of images N grows (issue 14): time, memory and disk per stage.

    python -m edgekd.benchmarks.scale [--sizes 5000,20000,50000] [--work DIR] [--out benchmarks/results/scale]
                                      [--image-size 224] [--cache disk] [--jobs N] [--set KEY=VALUE ...]

The script generates (deterministically, no network) one ImageFolder of radiograph-like images for the largest
N: grayscale PNG, 512 px, `--classes` classes, each a soft body outline with a tissue texture and rib-like bands,
plus a class-dependent finding (none, small bright nodules, thin lines, a diffuse opacity) and noise. Image i
is drawn from seed (`--seed`, i) and belongs to class i mod classes, so the first N images are a balanced
subset: smaller sizes are folders of symbolic links to them.

For each N it runs the real pipeline, one stage per fresh `edgekd run` process, into WORK/runs/N with
data.cache=`--cache`: `data` (validation, hashing, the split), `cache` (the image stores the training stages
read: the training split's uint8 store and the validation split's float32 store; built by the first stage that
reads them otherwise, so it is timed on its own here), `teacher` (one epoch of a small teacher: efficientnet_lite0
from ImageNet weights, 4 blocks frozen), `soft_labels` (the teacher over the training split, kd.cache_views=0)
and `student` (one epoch of distillation). While a stage runs, the resident memory of its process tree is read
from /proc/<pid>/status every 0.2 s, split into anonymous (RssAnon: heap, tensors; what can run a machine out
of memory) and file-backed (RssFile: mapped files such as the disk cache, which the kernel can drop and page in
again); the peaks of the tree's sums are recorded (and PSS, which counts pages shared by DataLoader workers
once, where /proc/<pid>/smaps_rollup exists). Disk: the run directory, its image cache, and the images.

Writes OUT.json (for programs) and OUT.md (the command, the machine, the table and an extrapolation to 500k
images, labelled as such). Rows of a size whose run fails carry its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from edgekd.benchmarks.compare import write_results
from edgekd.pipeline.machine import describe, summary

DEFAULT_OUT = Path("benchmarks/results/scale")
STAGES = ("data", "cache", "teacher", "soft_labels", "student")
GEN_KEYS = ("classes", "px", "seed")  # what makes two calls' images the same (image i is drawn from seed, i)
MIN_SPAN = 4  # the extrapolation needs a largest size at least this many times the smallest
# the pipeline settings of every run (`--set` adds to them): a small teacher for one epoch, one student epoch,
# fixed KD weights (kd auto would train three more students), nothing stretched by min_steps
BASE_SETTINGS = (
    "teacher.arch=efficientnet_lite0",
    "teacher.weights=imagenet",
    "teacher.head_epochs=0",
    "teacher.epochs=1",
    "teacher.freeze_blocks=4",
    "teacher.min_steps=0",
    "train.epochs=1",
    "train.min_steps=0",
    "train.warmup_epochs=0",
    "kd.alpha=0.9",
    "kd.temperature=4",
    "kd.cache_views=0",
    "gate.min_margin_over_majority=null",
)


# ----------------------------------------------------------------------------------------
# the images


def radiograph(index: int, classes: int = 4, px: int = 512, seed: int = 0) -> tuple[int, np.ndarray]:
    """(label, px x px uint8) of image `index`: the same for the same arguments on any machine."""
    rng = np.random.default_rng([seed, index])
    label = index % classes
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
    ax, ay = rng.uniform(0.32, 0.42), rng.uniform(0.38, 0.46)
    body = 1.0 / (1.0 + np.exp((((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 - 1.0) * 12.0))
    tissue = np.asarray(
        Image.fromarray(rng.normal(0, 1, (8, 8)).astype(np.float32), "F").resize((px, px), Image.BICUBIC)
    )
    ribs = 0.5 + 0.5 * np.sin((yy * rng.uniform(9, 13) + rng.uniform(0, 6.28)) * 6.2832)
    img = 0.12 + body * (0.38 + 0.05 * tissue + 0.06 * ribs)

    def blob(x0: float, y0: float, sigma: float, amp: float) -> np.ndarray:
        return amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma * sigma))

    kind = label % 4  # more classes than 4 repeat the findings at another strength
    strength = 1.0 + 0.5 * (label // 4)
    if kind == 1:  # nodules: one to three small bright blobs
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = cx + rng.uniform(-0.2, 0.2), cy + rng.uniform(-0.25, 0.25)
            img += blob(x0, y0, rng.uniform(0.02, 0.05), strength * rng.uniform(0.15, 0.3))
    elif kind == 2:  # thin lines (a tube, a fracture)
        for _ in range(int(rng.integers(1, 3))):
            th = rng.uniform(0, np.pi)
            d = np.abs(
                (xx - cx - rng.uniform(-0.1, 0.1)) * np.sin(th) - (yy - cy - rng.uniform(-0.1, 0.1)) * np.cos(th)
            )
            img += strength * rng.uniform(0.15, 0.3) * np.exp(-((d / rng.uniform(0.004, 0.01)) ** 2)) * body
    elif kind == 3:  # a diffuse opacity over part of the body
        x0, y0 = cx + rng.uniform(-0.2, 0.2), cy + rng.uniform(-0.2, 0.2)
        img += blob(x0, y0, rng.uniform(0.1, 0.18), strength * rng.uniform(0.12, 0.22)) * body
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 0.012, (px, px)).astype(np.float32)
    return label, np.clip(img * 255, 0, 255).astype(np.uint8)


def image_path(pool: Path, index: int, classes: int) -> Path:
    return pool / f"class_{index % classes}" / f"img_{index:06d}.png"


def _write_one(args: tuple) -> int:
    pool, index, classes, px, seed = args
    p = image_path(pool, index, classes)
    if p.exists():  # an interrupted generation resumes
        return 0
    _, arr = radiograph(index, classes, px, seed)
    tmp = p.with_name(f".{p.name}.tmp")
    Image.fromarray(arr, "L").save(tmp, "PNG", compress_level=1)  # encoding speed, not file size, bounds a 50k set
    os.replace(tmp, p)
    return 1


def generate(pool: Path, n: int, classes: int = 4, px: int = 512, seed: int = 0, jobs: int = 1) -> dict:
    """Images 0..n-1 into pool/class_<k>/ (existing files are kept); returns {seconds, written, bytes}."""
    for c in range(classes):
        (pool / f"class_{c}").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    work = [(pool, i, classes, px, seed) for i in range(n)]
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as p:
            written = sum(p.imap_unordered(_write_one, work, chunksize=64))
    else:
        written = sum(map(_write_one, work))
    size = sum(image_path(pool, i, classes).stat().st_size for i in range(n))
    return {"seconds": round(time.time() - t0, 1), "written": written, "bytes": size}


def subset(pool: Path, dest: Path, n: int, classes: int) -> Path:
    """An ImageFolder of the first n pool images as symbolic links (balanced: image i is class i mod classes)."""
    if dest.exists():
        shutil.rmtree(dest)
    for c in range(classes):
        (dest / f"class_{c}").mkdir(parents=True)
    for i in range(n):
        src = image_path(pool, i, classes).resolve()
        os.symlink(src, image_path(dest, i, classes))
    return dest


# ----------------------------------------------------------------------------------------
# memory of a process tree


def _proc_kb(pid: int, name: str, keys: tuple[str, ...]) -> Optional[dict]:
    """The `keys` fields (kB) of /proc/PID/NAME; None when the process is gone or has none of them."""
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0])
    return out or None


def process_tree(root: int) -> list[int]:
    """root and its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class TreeMemory:
    """Polls the resident memory of a process tree every `interval` s; peaks of the tree's sums, in MiB."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak = {"anon": 0, "file": 0, "total": 0, "pss_anon": 0, "pss_file": 0, "processes": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        anon = file = shmem = pss_a = pss_f = 0
        pids = process_tree(self.pid)
        for pid in pids:
            st = _proc_kb(pid, "status", ("RssAnon", "RssFile", "RssShmem", "VmHWM"))
            if not st:
                continue
            anon += st.get("RssAnon", 0)
            file += st.get("RssFile", 0)
            shmem += st.get("RssShmem", 0)
            pss = _proc_kb(pid, "smaps_rollup", ("Pss_Anon", "Pss_File"))
            if pss:
                pss_a += pss.get("Pss_Anon", 0)
                pss_f += pss.get("Pss_File", 0)
        p = self.peak
        p["anon"], p["file"] = max(p["anon"], anon), max(p["file"], file)
        p["total"] = max(p["total"], anon + file + shmem)
        p["pss_anon"], p["pss_file"] = max(p["pss_anon"], pss_a), max(p["pss_file"], pss_f)
        p["processes"] = max(p["processes"], len(pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def mib(self) -> dict:
        return {k: (round(v / 1024, 1) if k != "processes" else v) for k, v in self.peak.items()}


def measured(cmd: list[str], env: dict, log_path: Path) -> tuple[int, float, dict]:
    """(exit code, wall seconds, peak memory in MiB) of one command, its output appended to log_path."""
    t0 = time.time()
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as mem:
            rc = proc.wait()
    return rc, time.time() - t0, mem.mib()


def disk_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# ----------------------------------------------------------------------------------------
# one size


def _build_cache(run_dir: str) -> None:
    """`--build-cache RUN`: open the stores the training stages read (training split, validation split)."""
    from edgekd.pipeline.data import load_split
    from edgekd.pipeline.rundir import RunDir
    from edgekd.pipeline.stages import eval_images, train_images

    run = RunDir(run_dir)
    cfg, data = run.config(), load_split(run)
    train = train_images(run, data, cfg)
    val = eval_images(run, data, cfg, "val") if data.subset("val") else None
    print(json.dumps({"train": [train.kind, len(train)], "val": [val.kind, len(val)] if val is not None else None}))


def run_size(n: int, folder: Path, run_dir: Path, settings: list[str], log_path: Path) -> list[dict]:
    """The rows of one size: one per stage, each in a fresh process."""
    from edgekd.pipeline.rundir import read_json

    if run_dir.exists():
        shutil.rmtree(run_dir)
    env = dict(os.environ, EDGEKD_QUIET="1")
    sets = [a for s in settings for a in ("--set", s)]
    rows = []
    for stage in STAGES:
        if stage == "cache":
            cmd = [sys.executable, "-m", "edgekd.benchmarks.scale", "--build-cache", str(run_dir)]
        else:
            base = [sys.executable, "-m", "edgekd", "run", "--preset", "quick", "--data", str(folder)]
            cmd = base + ["--out", str(run_dir), "--stages", stage] + sets
        rc, wall, mem = measured(cmd, env, log_path)
        row = {"n": n, "stage": stage, "rc": rc, "wall_s": round(wall, 1), "peak_mib": mem}
        rows.append(row)
        if rc:
            break
    split = read_json(run_dir / "data" / "split.json") if (run_dir / "data" / "split.json").exists() else None
    counts: dict[str, int] = {}
    for it in (split or {}).get("items", []):
        counts[it["split"]] = counts.get(it["split"], 0) + 1
    stages_json = read_json(run_dir / "stages.json") if (run_dir / "stages.json").exists() else {}
    batch = None
    if (run_dir / "config.yaml").exists():
        from edgekd.pipeline.rundir import RunDir

        batch = RunDir(run_dir).config().train.batch_size
    for row in rows:
        stage = row["stage"]
        row.update(train_images=counts.get("train", 0), val_images=counts.get("val", 0))
        secs = (stages_json.get(stage) or {}).get("seconds")
        row["stage_s"] = round(secs, 1) if secs is not None else None
        # images the stage processed: every file (data), train + val (cache), the training split once (the rest)
        row["images"] = {"data": n, "cache": counts.get("train", 0) + counts.get("val", 0)}.get(
            stage, counts.get("train", 0)
        )
        row["img_per_s"] = round(row["images"] / row["wall_s"], 1) if row["wall_s"] and not row["rc"] else None
        hist = run_dir / stage / "history.json"
        if stage in ("teacher", "student") and hist.exists() and not row["rc"] and batch:
            # the optimisation steps alone (no process start, model build, validation): steps x batch / seconds
            h = read_json(hist)
            train_s = sum(e.get("train_seconds", 0) for e in h["history"])
            row["train_steps"], row["train_s"] = h.get("steps"), round(train_s, 1)
            row["train_img_per_s"] = round(h["steps"] * batch / train_s, 1) if train_s else None
    cache = run_dir / "cache"
    disk = {"run_dir_bytes": disk_bytes(run_dir), "cache_bytes": disk_bytes(cache)}
    disk["cache_files"] = sorted(f.name for f in cache.glob("*") if f.is_file()) if cache.exists() else []
    for row in rows:
        row["disk"] = disk
    return rows


# ----------------------------------------------------------------------------------------
# the extrapolation and the files


def _line(n_lo: int, v_lo: float, n_hi: int, v_hi: float) -> tuple[float, float]:
    """(fixed part, per-image part) of v = a + b*N through two sizes; b < 0 (noise) is taken as 0."""
    b = max(0.0, (v_hi - v_lo) / (n_hi - n_lo)) if n_hi > n_lo else 0.0
    return v_hi - b * n_hi, b


def extrapolate(rows: list[dict], target: int = 500_000, procs: int = 8) -> Optional[dict]:
    """On paper, from the smallest and largest sizes whose stages all ran: each figure as a fixed part plus a
    per-image part (the straight line through the two sizes), evaluated at `target` images, the training
    stages' per-image time split over `procs` processes (torchrun --nproc-per-node). See `notes`."""
    failed = {r["n"] for r in rows if r["rc"]}
    full = sorted(n for n in {r["n"] for r in rows} - failed if sum(r["n"] == n for r in rows) == len(STAGES))
    if len(full) < 2 or full[-1] < MIN_SPAN * full[0]:
        return None  # a line through sizes this close is mostly noise (process start-up, other jobs)
    lo, hi = full[0], full[-1]
    at = {(r["n"], r["stage"]): r for r in rows}
    stages = {}
    for st in STAGES:
        r_lo, r_hi = at[(lo, st)], at[(hi, st)]
        parallel = st in ("teacher", "soft_labels", "student")
        a, b = _line(lo, r_lo["wall_s"], hi, r_hi["wall_s"])
        ma, mb = _line(lo, r_lo["peak_mib"]["anon"], hi, r_hi["peak_mib"]["anon"])
        stages[st] = {
            "wall_s": round(a + b * target / (procs if parallel else 1)),
            "seconds_per_1k_images": round(b * 1000, 2),
            "split_over_processes": parallel,
            "anon_mib_per_process": round(ma + mb * target),
            "anon_mib_per_1k_images": round(mb * 1000, 2),
        }
    d_lo, d_hi = at[(lo, "student")]["disk"], at[(hi, "student")]["disk"]
    disk = {}
    for key in ("run_dir_bytes", "cache_bytes"):
        a, b = _line(lo, d_lo[key], hi, d_hi[key])
        disk[key.replace("_bytes", "_gb")] = round((a + b * target) / 1e9, 1)
    return {
        "target_images": target,
        "processes": procs,
        "from_n": [lo, hi],
        "stages": stages,
        **disk,
        "notes": [
            f"Extrapolation, not a measurement: each figure is the straight line through the N={lo} and N={hi} "
            f"measurements (a fixed part plus a part per image), evaluated at {target:,} images.",
            f"Training stages (teacher, soft labels, student): the per-image part divided by {procs} processes, "
            "which assumes each process keeps the rate measured here (one GPU, or one machine like this, each) and "
            "that data loading keeps up; on one machine's shared cores more processes do not add speed.",
            "The data stage (validation and hashing) and the cache build run in one process (rank 0, one decoder) "
            "whatever --nproc-per-node is: at this scale they are the part that does not shrink.",
            "The evaluate stage is not run here: with data.cache=disk it adds the test split's float32 store "
            "(N_test x 3 x S^2 x 4 bytes).",
        ],
    }


def _gb(b: int) -> str:
    return f"{b / 1e9:.2f}"


def render_markdown(res: dict) -> str:
    lines = [
        f"# Cost as N grows ({res['date'][:10]})",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Machine: {res['machine_summary']}; GPU: {res['machine'].get('gpu') or 'none'}. Load average (1, 5, 15 "
        f"min) at the start {res.get('loadavg_start')}, at the end {res.get('loadavg_end')}: other jobs on the "
        "same cores slow every stage.",
        "",
        *(
            []
            if res.get("complete", True)
            else ["**Partial**: the sizes below finished; the run was stopped before the others.", ""]
        ),
        f"Images: {res['generation']['classes']} classes of generated {res['generation']['px']} px grayscale "
        f"PNG radiograph-like images (benchmarks/scale.py `radiograph`, seed {res['generation']['seed']}), "
        f"generated once for N={res['generation']['n']} in {res['generation']['seconds']} s. Each stage is one "
        f"`edgekd run --preset quick --stages STAGE` process with: `{' '.join(res['settings'])}`.",
        "",
        "Per stage: wall time of the process (start-up included); img/s = images the stage processed / wall s; "
        "training img/s = optimisation steps x batch / their seconds; peak resident memory of the process tree "
        "(sums over the tree, polled every 0.2 s): anonymous (RssAnon), file-backed (RssFile: mapped files, "
        "the disk cache among them; the kernel can drop these pages), PSS anonymous (pages shared by "
        "DataLoader workers counted once).",
        "",
        "| N | train / val | stage | wall s | img/s | training img/s | anon MiB | file MiB | PSS anon MiB | procs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        m = r["peak_mib"]
        bad = f" (exit {r['rc']})" if r["rc"] else ""
        lines.append(
            f"| {r['n']} | {r['train_images']} / {r['val_images']} | {r['stage']}{bad} | {r['wall_s']} | "
            f"{r['img_per_s'] if r['img_per_s'] is not None else '-'} | {r.get('train_img_per_s') or '-'} | "
            f"{m['anon']} | {m['file']} | {m['pss_anon'] or '-'} | {m['processes']} |"
        )
    lines += ["", "Disk after the student stage:", "", "| N | images GB | run dir GB | of which image cache GB |"]
    lines.append("|---|---|---|---|")
    seen = set()
    for r in res["rows"]:
        if r["n"] in seen:
            continue
        seen.add(r["n"])
        d = r["disk"]
        lines.append(
            f"| {r['n']} | {_gb(res['images_bytes'][str(r['n'])])} | {_gb(d['run_dir_bytes'])} | "
            f"{_gb(d['cache_bytes'])} |"
        )
    ex = res.get("extrapolation")
    if not ex:
        lines += ["", f"No extrapolation: it needs two sizes, the largest at least {MIN_SPAN}x the smallest."]
    else:
        lines += [
            "",
            f"## Extrapolation to {ex['target_images']:,} images with --nproc-per-node {ex['processes']} (on paper)",
            "",
            *[f"- {t}" for t in ex["notes"]],
            "",
            "| stage | wall (estimate) | s per 1k images | split over processes | anon MiB per process (est.) "
            "| anon MiB / 1k images |",
            "|---|---|---|---|---|---|",
        ]
        for st, e in ex["stages"].items():
            lines.append(
                f"| {st} | {e['wall_s'] / 3600:.1f} h | {e['seconds_per_1k_images']} | "
                f"{'yes' if e['split_over_processes'] else 'no'} | "
                f"{e['anon_mib_per_process']:.0f} | {e['anon_mib_per_1k_images']} |"
            )
        lines += [
            "",
            f"Disk (estimate): run directory {ex['run_dir_gb']} GB, of which image cache {ex['cache_gb']} GB.",
        ]
    return "\n".join(lines) + "\n"


def _loadavg() -> Optional[list[float]]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _write(out: Path, res: dict) -> None:
    write_results(out, res, render_markdown(res))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000,50000", help="comma-separated numbers of images")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-scale"), help="images and runs go here")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--cache", default="disk", choices=["auto", "ram", "disk", "none"])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--source-px", type=int, default=512, help="side of the generated images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating images")
    ap.add_argument("--target", type=int, default=500_000, help="images of the extrapolation")
    ap.add_argument("--target-procs", type=int, default=8, help="--nproc-per-node of the extrapolation")
    ap.add_argument("--keep-runs", action="store_true", help="keep WORK/runs/N (default: removed after measuring)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--build-cache", metavar="RUN_DIR", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.build_cache:
        _build_cache(a.build_cache)
        return 0
    sizes = sorted({int(s) for s in a.sizes.split(",") if s.strip()})
    work = a.work.expanduser().resolve()
    pool = work / f"images-{a.classes}c-{a.source_px}px-seed{a.seed}"
    log_path = work / "scale.log"
    work.mkdir(parents=True, exist_ok=True)
    load_start = _loadavg()  # before this script's own image generation loads the cores
    print(f"scale: generating {sizes[-1]} images in {pool} ({a.jobs} processes)", flush=True)
    gen = generate(pool, sizes[-1], a.classes, a.source_px, a.seed, a.jobs)
    gen.update(n=sizes[-1], classes=a.classes, px=a.source_px, seed=a.seed)
    settings = [f"data.image_size={a.image_size}", f"data.cache={a.cache}", *BASE_SETTINGS, *a.sets]
    command = "python -m edgekd.benchmarks.scale " + " ".join(
        [f"--sizes {','.join(map(str, sizes))}", f"--image-size {a.image_size}", f"--cache {a.cache}"]
        + ([f"--classes {a.classes}"] if a.classes != 4 else [])
        + ([f"--source-px {a.source_px}"] if a.source_px != 512 else [])
        + [f"--set {s}" for s in a.sets]
        + [f"--out {a.out}"]
    )
    machine = describe()
    res = {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "machine_summary": summary(machine),
        "loadavg_start": load_start,
        "settings": settings,
        "generation": gen,
        "images_bytes": {},
        "rows": [],
        "complete": False,
    }
    rows = res["rows"]
    old = Path(f"{a.out}.json")
    if old.exists():  # sizes measured by an earlier call with the same settings and images are kept
        prev = json.loads(old.read_text())
        same = prev.get("settings") == settings and {k: prev.get("generation", {}).get(k) for k in GEN_KEYS} == {
            k: gen.get(k) for k in GEN_KEYS
        }
        if same:
            rows += [r for r in prev.get("rows", []) if r["n"] not in sizes]
            res["images_bytes"].update({k: v for k, v in prev.get("images_bytes", {}).items() if int(k) not in sizes})
            kept = sorted({r["n"] for r in rows})
            if kept:
                # both calls are the command; the generation that wrote the images is the earlier one
                res["command"] = f"{prev['command']}, then {command}"
                if prev.get("generation", {}).get("written"):
                    res["generation"] = prev["generation"]
                print(f"scale: keeping the earlier measurements of N={', '.join(map(str, kept))}", flush=True)
    for n in sizes:
        folder = subset(pool, work / "sets" / str(n), n, a.classes)
        res["images_bytes"][str(n)] = sum(image_path(pool, i, a.classes).stat().st_size for i in range(n))
        print(f"scale: N={n}", flush=True)
        got = run_size(n, folder, work / "runs" / str(n), settings, log_path)
        for r in got:
            print(f"  {r['stage']}: {r['wall_s']} s, {r['img_per_s']} img/s, peak {r['peak_mib']} (rc {r['rc']})")
        rows += got
        if not a.keep_runs:
            shutil.rmtree(work / "runs" / str(n), ignore_errors=True)
        rows.sort(key=lambda r: (r["n"], STAGES.index(r["stage"]) if r["stage"] in STAGES else 99))
        res["complete"] = n == sizes[-1]
        res["loadavg_end"] = _loadavg()
        res["extrapolation"] = extrapolate(rows, a.target, a.target_procs)
        _write(a.out, res)  # after every size: an interrupted run keeps the sizes it finished
    print(f"scale: wrote {a.out}.md and .json; log {log_path}")
    return 1 if any(r["rc"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
