"""Where the training images live while a model trains on them (`data.cache`).

Every store answers `store[idx]` (a 1-D index tensor) with an N x 3 x S x S uint8 tensor of those images, decoded
through the preprocessing contract's resize at S = 8/7 of the input size (the augmentation source), so the
three give the same bytes and therefore the same batches:

- `ram`: all images decoded once into one uint8 tensor (N·3·S² bytes);
- `disk`: decoded once into a uint8 memory-mapped file (the run's `cache/`, or `data.cache_dir` shared between
  runs), keyed by the images' hashes and S; built in chunks with its progress on disk, so an interrupted build
  resumes; pages are read on demand, so resident memory does not grow with N;
- `none`: decoded from the files on every access (data that changes, or too large for the disk);
- `auto`: `ram` when the images take under a quarter of the available memory, else `disk` when the disk has
  room, else `none`; the choice is logged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgekd.pipeline import preprocess
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.progress import log, progress
from edgekd.pipeline.rundir import atomic_write_json, fingerprint

BUILD_CHUNK = 256  # images decoded between two progress records of a disk cache


def source_size(image_size: int) -> int:
    """Side of the stored images: a little larger than the input, for random-resized-crop augmentation."""
    return int(round(image_size / 0.875))


def _decode(path: str, size: int) -> torch.Tensor:
    img = preprocess.resize_rgb(preprocess.load_rgb(path), size, size)[0]
    return img.round_().clamp_(0, 255).to(torch.uint8)


class RamStore:
    kind = "ram"

    def __init__(self, items: list, size: int, desc: str = "load train"):
        self.images = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
        for i, it in enumerate(progress(items, desc=desc, unit="img")):
            self.images[i] = _decode(it.path, size)
        self.shape = tuple(self.images.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        return self.images[idx]


class DiskStore:
    kind = "disk"

    def __init__(self, items: list, size: int, directory: Path):
        n = len(items)
        self.shape = (n, 3, size, size)
        key = fingerprint("images", [it.sha256 for it in items], size, preprocess.RESIZE_ALGORITHM)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"images-{key}-{size}px.u8"
        if not self.path.exists():
            self._build(items, size, directory / f"images-{key}-{size}px.partial")
        self.mm = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)

    def _build(self, items: list, size: int, partial: Path) -> None:
        state_p = partial.with_suffix(".json")
        done = 0
        if partial.exists() and state_p.exists():
            st = json.loads(state_p.read_text())
            if st.get("shape") == list(self.shape):
                done = int(st.get("done", 0))
        need = int(np.prod(self.shape))
        free = shutil.disk_usage(partial.parent).free
        if done == 0 and free < need * 1.05:
            raise EdgekdError(
                f"data.cache=disk needs {need / 1e9:.1f} GB in {partial.parent} but {free / 1e9:.1f} GB are free; "
                "set data.cache_dir to a larger disk or data.cache=none"
            )
        mm = np.memmap(partial, dtype=np.uint8, mode="r+" if done else "w+", shape=self.shape)
        if done:
            log(f"data cache: resuming the image cache at {done}/{len(items)} ({partial})")
        bar = progress(None, desc="cache train images", total=len(items), unit="img", initial=done)
        try:
            for start in range(done, len(items), BUILD_CHUNK):
                stop = min(len(items), start + BUILD_CHUNK)
                for i in range(start, stop):
                    mm[i] = _decode(items[i].path, size).numpy()
                    bar.update(1)
                mm.flush()
                atomic_write_json(state_p, {"shape": list(self.shape), "done": stop})
        finally:
            bar.close()
        del mm
        os.replace(partial, self.path)  # complete: the cache appears under its final name only now
        state_p.unlink(missing_ok=True)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        return torch.from_numpy(np.ascontiguousarray(self.mm[idx]))


class FileStore:
    kind = "none"

    def __init__(self, items: list, size: int):
        self.items, self.shape = items, (len(items), 3, size, size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        rows = idx.tolist() if isinstance(idx, torch.Tensor) else idx
        if isinstance(rows, int):
            return _decode(self.items[rows].path, self.shape[2])
        return (
            torch.stack([_decode(self.items[i].path, self.shape[2]) for i in rows])
            if rows
            else torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        )


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def choose(mode: str, n: int, size: int, directory: Path) -> str:
    """The store `auto` picks for n images of side `size` (explicit modes pass through)."""
    if mode != "auto":
        return mode
    need = n * 3 * size * size
    if need < _available_memory() / 4:
        return "ram"
    directory.mkdir(parents=True, exist_ok=True)
    return "disk" if shutil.disk_usage(directory).free > need * 1.2 else "none"


def open_store(items: list, image_size: int, mode: str, directory: Path, what: str = "train"):
    size = source_size(image_size)
    kind = choose(mode, len(items), size, directory)
    if mode == "auto" and len(items) * 3 * size * size > 2**30:  # say so where it matters (over 1 GB)
        gb = len(items) * 3 * size**2 / 1e9
        log(f"data.cache=auto: {kind} for {len(items)} {what} images at {size} px ({gb:.1f} GB)")
    if kind == "ram":
        return RamStore(items, size, desc=f"load {what}")
    if kind == "disk":
        return DiskStore(items, size, directory)
    return FileStore(items, size)


def cache_directory(run_root: Path, cache_dir: Optional[str]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path(run_root) / "cache"
