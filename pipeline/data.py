"""Data stage: find images (ELPV or an ImageFolder), validate them, split deterministically.

Output: RUN_DIR/data/split.json (classes + items with split and content hash) and
RUN_DIR/data/report.json (bad files, class counts, imbalance, cross-split duplicates).
Images are decoded later, per stage, through pipeline.preprocess (the shared contract).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.imagestore import decode_contract
from edgekd.pipeline.progress import progress
from edgekd.pipeline.rundir import RunDir, atomic_write_json, read_json

ELPV_CLASSES = ["defect_0", "defect_1_3", "defect_2_3", "defect_1"]
SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"  # split of data.unlabeled images (label -1); not part of the labelled data's fingerprint


@dataclass
class Item:
    key: str  # stable id: path relative to the data root
    path: str  # absolute path
    label: int
    split: str = ""
    sha256: str = ""


@dataclass
class DataSplit:
    source: str
    classes: list[str]
    items: list[Item]
    fingerprint: str = ""
    report: dict = field(default_factory=dict)

    def subset(self, split: str) -> list[Item]:
        return [it for it in self.items if it.split == split]

    def labels(self, split: str) -> np.ndarray:
        return np.array([it.label for it in self.subset(split)], dtype=np.int64)

    @property
    def unlabeled_fingerprint(self) -> str:
        """Identity of the data.unlabeled images ('' without them): the KD student and its soft labels depend on
        it; the teacher and the baseline do not."""
        from edgekd.pipeline.rundir import fingerprint

        extra = self.subset(UNLABELED)
        return fingerprint([(it.key, it.sha256) for it in extra]) if extra else ""

    def kd_pool(self) -> list[Item]:
        """What the distilled student trains on: the training split, then the unlabelled images."""
        return self.subset("train") + self.subset(UNLABELED)


# ----------------------------------------------------------------------------------------
# discovery


def _elpv_items() -> tuple[list[str], list[Item], Path]:
    try:
        import elpv_dataset
    except ImportError:
        raise EdgekdError("the ELPV dataset is not installed: pip install elpv-dataset") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    rows = np.genfromtxt(root / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "prob", "type"])
    # Defect probabilities 0, 1/3, 2/3, 1 -> class index 0..3.
    items = [
        Item(key=p.decode(), path=str(root / p.decode()), label=int(round(float(pr) * 3)))
        for p, pr in zip(rows["path"], rows["prob"])
    ]
    return ELPV_CLASSES, items, root


def _folder_items(root: Path) -> tuple[list[str], list[Item], bool]:
    if not root.is_dir():
        raise EdgekdError(
            f"data directory not found: {root} (use --data elpv or a folder with one sub-folder per class)"
        )
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    has_splits = bool(subdirs) and {p.name for p in subdirs} <= set(SPLITS) and (root / "train").is_dir()
    if has_splits:
        if not (root / "test").is_dir():
            raise EdgekdError(f"{root} has train/ but no test/ folder; add test/ or use a flat class-folder layout")
        classes = sorted(
            {
                c.name
                for s in SPLITS
                if (root / s).is_dir()
                for c in (root / s).iterdir()
                if c.is_dir() and not c.name.startswith(".")
            }
        )
    else:
        classes = [p.name for p in subdirs]
    if len(classes) < 2:
        raise EdgekdError(f"{root} needs at least 2 class sub-folders, found {len(classes)}")
    items = []
    for split in SPLITS if has_splits else ("",):
        base = root / split if split else root
        for ci, c in enumerate(classes):
            cdir = base / c
            if not cdir.is_dir():
                continue
            for f in sorted(cdir.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts):
                    items.append(Item(key=str(f.relative_to(root)), path=str(f), label=ci, split=split))
    return classes, items, has_splits


# ----------------------------------------------------------------------------------------
# validation


def check_image(path: str, max_pixels: int) -> tuple[Optional[str], str]:
    """(problem or None, sha256 of the bytes). Decodes fully so truncation is caught."""
    p = Path(path)
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return "zero-byte file", digest
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    return f"{w}x{h} exceeds data.max_pixels={max_pixels} (decompression-bomb guard)", digest
                img.load()
    except UnidentifiedImageError:
        return "not an image", digest
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"exceeds data.max_pixels={max_pixels} (decompression-bomb guard)", digest
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"unreadable ({msg})", digest
    return None, digest


def _stratified_split(items: list[Item], fraction: float, seed: int, out: str) -> None:
    """Move round(n*fraction) items of each class (at least one when the class has >= 2) to `out`."""
    by_class: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        by_class[it.label].append(it)
    rng = random.Random(seed)
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda it: it.key)
        rng.shuffle(group)
        n = len(group)
        k = min(n - 1, max(1, round(n * fraction))) if n >= 2 and fraction > 0 else 0
        for it in group[:k]:
            it.split = out


def prepare_data(cfg: DataConfig, run: RunDir) -> DataSplit:
    """Discover, validate and split; write data/split.json and data/report.json."""
    if cfg.source == "elpv":
        classes, items, root = _elpv_items()
        has_splits = False
        source = "elpv"
    else:
        root = Path(cfg.source).expanduser().resolve()
        classes, items, has_splits = _folder_items(root)
        source = str(root)

    if cfg.limit_per_class:
        rng = random.Random(cfg.seed)
        by: dict[int, list[Item]] = defaultdict(list)
        for it in items:
            by[it.label].append(it)
        items = [
            it
            for label in sorted(by)
            for it in sorted(rng.sample(by[label], min(cfg.limit_per_class, len(by[label]))), key=lambda i: i.key)
        ]

    bad: list[dict] = []
    good: list[Item] = []
    for it in progress(items, desc="validate images", unit="img"):
        problem, digest = check_image(it.path, cfg.max_pixels)
        it.sha256 = digest
        if problem:
            bad.append({"file": it.key, "problem": problem})
        else:
            good.append(it)
    if bad and not cfg.skip_bad_images:
        shown = "; ".join(f"{b['file']}: {b['problem']}" for b in bad[:5])
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise EdgekdError(
            f"{len(bad)} bad image file(s): {shown}{more}. Fix or remove them, or pass --skip-bad-images "
            "to skip them (they are then listed in the run's data report)"
        )

    counts = Counter(it.label for it in good)
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise EdgekdError(f"class(es) with no usable images: {', '.join(empty)}; every class folder needs images")

    if not has_splits:
        for it in good:
            it.split = "train"
        _stratified_split(good, cfg.test_fraction, cfg.seed, "test")
    if not any(it.split == "val" for it in good) and cfg.val_fraction > 0:
        train = [it for it in good if it.split == "train"]
        _stratified_split(train, cfg.val_fraction, cfg.seed + 1, "val")
    for s in ("train", "test"):
        if not any(it.split == s for it in good):
            raise EdgekdError(f"the {s} split is empty; add images (each class needs at least 2)")

    # Exact duplicates across splits leak test answers into training.
    where: dict[str, set[str]] = defaultdict(set)
    names: dict[str, list[str]] = defaultdict(list)
    for it in good:
        where[it.sha256].add(it.split)
        names[it.sha256].append(it.key)
    leaks = [{"sha256": h[:16], "files": names[h], "splits": sorted(where[h])} for h in where if len(where[h]) > 1]

    per_split = {
        s: [sum(1 for it in good if it.split == s and it.label == c) for c in range(len(classes))] for s in SPLITS
    }
    n_all = [counts[i] for i in range(len(classes))]
    report = {
        "source": source,
        "classes": classes,
        "num_images": len(good),
        "class_counts": dict(zip(classes, n_all)),
        "split_counts": {s: dict(zip(classes, per_split[s])) for s in SPLITS},
        "imbalance_ratio": round(max(n_all) / max(1, min(n_all)), 2),
        "majority_class_share_test": round(max(per_split["test"]) / max(1, sum(per_split["test"])), 4),
        "skipped": bad,
        "cross_split_duplicates": leaks,
        "max_pixels": cfg.max_pixels,
    }
    from edgekd.pipeline.rundir import fingerprint

    fp = fingerprint([(it.key, it.sha256, it.label, it.split) for it in good], classes)
    if cfg.unlabeled:
        extra, report["unlabeled"] = _unlabeled_items(Path(cfg.unlabeled).expanduser(), good, cfg.max_pixels)
        good = good + extra
    split = DataSplit(source=source, classes=classes, items=good, report=report, fingerprint=fp)
    atomic_write_json(
        run.split_json,
        {"source": source, "classes": classes, "fingerprint": split.fingerprint, "items": [asdict(it) for it in good]},
    )
    atomic_write_json(run.data_report, report)
    return split


def _unlabeled_items(root: Path, labelled: list[Item], max_pixels: int) -> tuple[list[Item], dict]:
    """Every readable image under `root` (recursively) as an unlabelled item. Files that are not images are
    skipped and counted; an image identical (by content hash) to a labelled one is dropped, so no test or
    validation image can reach the student through the teacher's labels."""
    if not root.is_dir():
        raise EdgekdError(f"data.unlabeled: folder not found: {root}")
    files = sorted(
        f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )
    by_hash = {it.sha256: it.split for it in labelled}
    items, skipped, overlap = [], [], {s: 0 for s in SPLITS}
    for f in progress(files, desc="validate unlabeled", unit="img"):
        problem, digest = check_image(str(f), max_pixels)
        if problem:
            skipped.append({"file": str(f.relative_to(root)), "problem": problem})
        elif digest in by_hash:
            overlap[by_hash[digest]] += 1
        else:
            by_hash[digest] = UNLABELED
            items.append(
                Item(key=f"{UNLABELED}/{f.relative_to(root)}", path=str(f), label=-1, split=UNLABELED, sha256=digest)
            )
    if not items:
        raise EdgekdError(
            f"data.unlabeled: no usable images in {root} ({len(files)} file(s), {len(skipped)} unreadable)"
        )
    rep = {
        "source": str(root),
        "num_images": len(items),
        "skipped": skipped,
        # identical to a labelled image: removed (the test split's count must read 0 reaching the student)
        "removed_identical_to": overlap,
    }
    return items, rep


def load_split(run: RunDir) -> DataSplit:
    run.require(run.split_json, f"run the data stage first (edgekd run --out {run.root})")
    d = read_json(run.split_json)
    rep = read_json(run.data_report) if run.data_report.exists() else {}
    return DataSplit(
        source=d["source"],
        classes=d["classes"],
        items=[Item(**i) for i in d["items"]],
        fingerprint=d["fingerprint"],
        report=rep,
    )


# ----------------------------------------------------------------------------------------
# tensors


def decode_resized(items: list[Item], size: int, desc: Optional[str] = "decode") -> torch.Tensor:
    """N x 3 x size x size float32 (0..255) through the preprocessing contract's resize, for a few images (a
    chunk); whole splits are read through an edgekd.pipeline.imagestore store, a batch at a time."""
    out = torch.empty((len(items), 3, size, size), dtype=torch.float32)
    for i, it in enumerate(progress(items, desc=desc, unit="img") if desc else items):
        out[i] = decode_contract(it.path, size)
    return out
