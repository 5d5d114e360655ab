"""Where a split's decoded images live while the stages read them (`data.cache`).

Every store answers `store[idx]` (a 1-D index tensor or a slice) with an N x 3 x S x S tensor of those images,
decoded through the preprocessing contract, so the three kinds give the same values and therefore the same
batches and logits. Two layouts:

- training (`open_store`): uint8 at S = 8/7 of the input size, the augmentation source;
- evaluation (`open_eval_store`: validation, test, export parity, benchmark inputs): the contract's resize to the
  input size itself, unrounded float32 0..255 (the values the exported model and the Android app see; rounding
  them to uint8 would move every evaluated input by up to half a grey level). `Normalised` reads such a store a
  batch at a time, normalised, so no reader holds a normalised copy of a split.

Kinds:

- `ram`: all images decoded once into one tensor (N·3·S² bytes uint8, 4x that float32);
- `disk`: decoded once into a memory-mapped file (the run's `cache/`, or `data.cache_dir` shared between
  runs), keyed by the images' hashes, S and layout, named by split; built in chunks with its progress on disk, so
  an interrupted build resumes; pages are read on demand (file-backed), so anonymous memory does not grow with N;
- `none`: decoded from the files on every access (data that changes, or too large for the disk);
- `auto`: `ram` when the images take under a quarter of the available memory, else `disk` when the disk has
  room, else `none`; the choice is logged when the split is over 1 GB.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
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
    """3 x size x size uint8: a training image (the augmentation source)."""
    img = preprocess.resize_rgb(preprocess.load_rgb(path), size, size)[0]
    return img.round_().clamp_(0, 255).to(torch.uint8)


def decode_contract(path: str, size: int) -> torch.Tensor:
    """3 x size x size float32 0..255: the preprocessing contract's decode and resize, unrounded (evaluation)."""
    return preprocess.resize_rgb(preprocess.load_rgb(path), size, size)[0]


def _decoder(dtype: torch.dtype):
    # looked up at call time, so a test can patch either
    return _decode if dtype == torch.uint8 else decode_contract


def _rows(idx):
    """An index tensor, an int or a slice -> what numpy indexes with (a slice stays a slice)."""
    if isinstance(idx, torch.Tensor):
        return idx.numpy() if idx.dim() else int(idx)
    return idx


class RamStore:
    kind = "ram"

    def __init__(self, items: list, size: int, desc: str = "load train", dtype: torch.dtype = torch.uint8):
        self.images = torch.empty((len(items), 3, size, size), dtype=dtype)
        decode = _decoder(dtype)
        for i, it in enumerate(progress(items, desc=desc, unit="img")):
            self.images[i] = decode(it.path, size)
        self.shape = tuple(self.images.shape)
        self.dtype = dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        return self.images[idx]


@contextlib.contextmanager
def _exclusive(lock: Path):
    try:
        import fcntl
    except ImportError:  # no POSIX locks: one builder is assumed
        yield
        return
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_NP = {torch.uint8: (np.uint8, "u8"), torch.float32: (np.float32, "f32")}


class DiskStore:
    kind = "disk"

    def __init__(self, items: list, size: int, directory: Path, dtype: torch.dtype = torch.uint8, what: str = "train"):
        n = len(items)
        self.shape, self.dtype, self.what = (n, 3, size, size), dtype, what
        np_dtype, suffix = _NP[dtype]
        parts = ["images", [it.sha256 for it in items], size, preprocess.RESIZE_ALGORITHM]
        if dtype != torch.uint8:  # the training layout keeps the name it had before evaluation stores existed
            parts.append(suffix)
        key = fingerprint(*parts)
        prefix = "images" if dtype == torch.uint8 else what  # val-*.f32, test-*.f32: splits never share a file
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{prefix}-{key}-{size}px.{suffix}"
        if not n:  # nothing to map (an empty file cannot be)
            self.mm = np.zeros(self.shape, dtype=np_dtype)
            return
        if not self.path.exists():
            # one builder at a time (the ranks of a distributed run, two runs sharing data.cache_dir); the others
            # wait and then map the finished file
            lock = directory / f"{prefix}-{key}-{size}px.lock"
            with _exclusive(lock):
                if not self.path.exists():
                    self._build(items, size, directory / f"{prefix}-{key}-{size}px.partial")
                    lock.unlink(missing_ok=True)  # a waiter holds the old file's lock and then finds the cache
        self._map()

    def _map(self) -> None:
        self.mm = np.memmap(self.path, dtype=_NP[self.dtype][0], mode="r", shape=self.shape)

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn (macOS, Windows) get the store pickled: the path, not the pages
        state = dict(self.__dict__)
        if self.shape[0]:
            del state["mm"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "mm" not in state:
            self._map()

    def _build(self, items: list, size: int, partial: Path) -> None:
        state_p = partial.with_suffix(".json")
        done = 0
        if partial.exists() and state_p.exists():
            st = json.loads(state_p.read_text())
            if st.get("shape") == list(self.shape):
                done = int(st.get("done", 0))
        np_dtype = _NP[self.dtype][0]
        need = int(np.prod(self.shape)) * np.dtype(np_dtype).itemsize
        free = shutil.disk_usage(partial.parent).free
        if done == 0 and free < need * 1.05:
            raise EdgekdError(
                f"data.cache=disk needs {need / 1e9:.1f} GB in {partial.parent} but {free / 1e9:.1f} GB are free; "
                "set data.cache_dir to a larger disk or data.cache=none"
            )
        mm = np.memmap(partial, dtype=np_dtype, mode="r+" if done else "w+", shape=self.shape)
        if done:
            log(f"data cache: resuming the image cache at {done}/{len(items)} ({partial})")
        bar = progress(None, desc=f"cache {self.what} images", total=len(items), unit="img", initial=done)
        decode = _decoder(self.dtype)
        try:
            for start in range(done, len(items), BUILD_CHUNK):
                stop = min(len(items), start + BUILD_CHUNK)
                for i in range(start, stop):
                    mm[i] = decode(items[i].path, size).numpy()
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
        a = self.mm[_rows(idx)]  # a slice is a view of the read-only map, an index array already a copy
        return torch.from_numpy(np.asarray(a) if a.flags.writeable else np.array(a))


class FileStore:
    kind = "none"

    def __init__(self, items: list, size: int, dtype: torch.dtype = torch.uint8):
        self.items, self.shape, self.dtype = items, (len(items), 3, size, size), dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        rows = _rows(idx)
        decode = _decoder(self.dtype)
        if isinstance(rows, (int, np.integer)):
            return decode(self.items[rows].path, self.shape[2])
        rows = range(len(self))[rows] if isinstance(rows, slice) else rows.tolist()
        return (
            torch.stack([decode(self.items[i].path, self.shape[2]) for i in rows])
            if len(rows)
            else torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        )


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def choose(mode: str, n: int, size: int, directory: Path, itemsize: int = 1) -> str:
    """The store `auto` picks for n images of side `size`, `itemsize` bytes a value (explicit modes pass through)."""
    if mode != "auto":
        return mode
    need = n * 3 * size * size * itemsize
    if need < _available_memory() / 4:
        return "ram"
    directory.mkdir(parents=True, exist_ok=True)
    return "disk" if shutil.disk_usage(directory).free > need * 1.2 else "none"


def _open(items: list, size: int, dtype: torch.dtype, mode: str, directory: Path, what: str):
    itemsize = torch.empty((), dtype=dtype).element_size()
    kind = choose(mode, len(items), size, directory, itemsize)
    nbytes = len(items) * 3 * size * size * itemsize
    if mode == "auto" and nbytes > 2**30:  # say so where it matters (over 1 GB)
        log(f"data.cache=auto: {kind} for {len(items)} {what} images at {size} px ({nbytes / 1e9:.1f} GB)")
    if kind == "ram":
        return RamStore(items, size, desc=f"load {what}", dtype=dtype)
    if kind == "disk":
        return DiskStore(items, size, directory, dtype=dtype, what=what)
    return FileStore(items, size, dtype=dtype)


def open_store(items: list, image_size: int, mode: str, directory: Path, what: str = "train"):
    """The training layout: uint8 at source_size(image_size), the augmentation source."""
    return _open(items, source_size(image_size), torch.uint8, mode, directory, what)


def open_eval_store(items: list, size: int, mode: str, directory: Path, what: str):
    """The evaluation layout: the contract's float32 0..255 at `size` itself (read it through `Normalised`)."""
    return _open(items, size, torch.float32, mode, directory, what)


class Normalised:
    """An evaluation store read as normalised NCHW float32, a batch at a time: `view[a:b]` (or an index tensor)
    reads and normalises only those images; `len`, `shape` as a tensor's. Values equal normalising the whole
    split at once (the normalisation is element-wise), so results do not depend on the batching."""

    def __init__(self, store, mean: Sequence[float], std: Sequence[float]):
        self.store, self.mean, self.std = store, tuple(mean), tuple(std)

    @property
    def kind(self) -> str:
        return self.store.kind

    @property
    def shape(self) -> tuple:
        return tuple(self.store.shape)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)):
            return self[int(idx) : int(idx) + 1][0] if idx >= 0 else self[len(self) + int(idx)]
        return preprocess.normalize(self.store[idx].float(), self.mean, self.std)

    def array(
        self,
        n: Optional[int] = None,
        path: Optional[Path] = None,
        scratch: Optional[Path] = None,
        desc: Optional[str] = None,
        batch_size: int = 128,
    ) -> np.ndarray:
        """The first n images (default all) as one float32 NCHW array, for a consumer that needs an array (parity
        images, a benchmark's input file), filled a batch at a time. With `path` it is that .npy file, and with
        `scratch` an unnamed temporary file in that folder (gone when the array is), memory-mapped either way:
        anonymous memory then stays one batch, whatever n is."""
        n = len(self) if n is None else min(int(n), len(self))
        shape = (n, *self.shape[1:])
        if path is not None:
            out = np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.float32, shape=shape)
        elif scratch is not None and n:
            Path(scratch).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=scratch) as fh:  # the map keeps the pages; the name is gone already
                out = np.memmap(fh, dtype=np.float32, mode="w+", shape=shape)
        else:
            out = np.empty(shape, dtype=np.float32)
        starts = range(0, n, batch_size)
        for i in progress(starts, desc=desc, unit="batch") if desc else starts:
            out[i : min(n, i + batch_size)] = self[i : min(n, i + batch_size)].numpy()
        if isinstance(out, np.memmap):
            out.flush()
        return out


def file_images(items: list, size: int, mean: Sequence[float], std: Sequence[float]) -> Normalised:
    """A list of images (a coverage pass, a calibration sample) through the contract, decoded from the files as
    they are read: memory does not grow with the list."""
    return Normalised(FileStore(items, size, dtype=torch.float32), mean, std)


def cache_directory(run_root: Path, cache_dir: Optional[str]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path(run_root) / "cache"
