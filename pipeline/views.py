"""Consistent cached teaching: K augmented views per training image, labelled once by the teacher, replayed
exactly to the student (Beyer et al. 2022, "A good teacher is patient and consistent"; FKD, Shen & Xing 2022).

A view is the random numbers that `augment` turns into a crop and flips (5 per image), plus, when mixup is on,
a partner image with its own 5 numbers and the mixing weight lam. Everything is drawn from (seed, image index,
view), so the same views come out on any number of ranks, chunk sizes or resumes. The teacher's logits for a
view are stored beside its numbers; the student renders the view from the same numbers and the same uint8
source image, so teacher and student see the same pixels.

Soft labels are written in chunks of images (`chunk-00012.safetensors`), each atomically, so an interrupted
teacher pass resumes from the last complete chunk; the reader accepts chunks written by any number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgekd.pipeline import preprocess
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import atomic_path

CHUNK = 512  # images per soft-label file: bounded memory and a resume point every few seconds of teacher time


@dataclass
class CachedViews:
    """K views per image. r, r_partner: N x K x 5 uniforms; partner: N x K image index (-1: no mixup);
    lam: N x K weight of the image itself; logits: N x K x C teacher logits of the rendered view."""

    r: torch.Tensor
    partner: torch.Tensor
    r_partner: torch.Tensor
    lam: torch.Tensor
    logits: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.r.shape[1])


def draw_views(index: torch.Tensor, n_images: int, k: int, seed: int, mixup: float) -> dict[str, torch.Tensor]:
    """The views of the images in `index` (a 1-D tensor of image indices out of n_images)."""
    m = len(index)
    r = torch.empty((m, k, 5))
    rp = torch.empty((m, k, 5))
    partner = torch.full((m, k), -1, dtype=torch.int64)
    lam = torch.ones((m, k))
    for row, i in enumerate(index.tolist()):
        g = torch.Generator().manual_seed((seed * 1_000_003 + i * 7_919 + 17) % (2**63 - 1))
        r[row] = torch.rand((k, 5), generator=g)
        rp[row] = torch.rand((k, 5), generator=g)
        if mixup > 0 and n_images > 1:
            # a partner other than the image itself: offset 1..n-1
            partner[row] = (i + 1 + torch.randint(n_images - 1, (k,), generator=g)) % n_images
            rng = np.random.default_rng([seed, i, 3])
            lam[row] = torch.from_numpy(rng.beta(mixup, mixup, size=k).astype(np.float32))
    return {"r": r, "partner": partner, "r_partner": rp, "lam": lam}


def render(
    images: torch.Tensor,
    idx: torch.Tensor,
    r: torch.Tensor,
    partner: torch.Tensor,
    r_partner: torch.Tensor,
    lam: torch.Tensor,
    size: int,
    scale: tuple[float, float],
) -> torch.Tensor:
    """Float 0..255 pixels of one view per row: image idx[j] under r[j], mixed with image partner[j] under
    r_partner[j] by lam[j] where partner[j] >= 0."""
    x = augment(images[idx], size, scale, r)
    mixed = (partner >= 0).nonzero().flatten()
    if len(mixed):
        xp = augment(images[partner[mixed]], size, scale, r_partner[mixed])
        w = lam[mixed].view(-1, 1, 1, 1)
        x[mixed] = w * x[mixed] + (1 - w) * xp
    return x


def augment(images: torch.Tensor, size: int, scale: tuple[float, float], r: torch.Tensor) -> torch.Tensor:
    """Random resized crop (aspect 3/4..4/3) + horizontal/vertical flips; uint8 in, float 0..255 out.

    `r` holds 5 uniform numbers per image, drawn for the global batch so any split across ranks
    augments each image the same way."""
    n, _, h, w = images.shape
    out = torch.empty((n, 3, size, size), dtype=torch.float32)
    for i in range(n):
        area = h * w * (scale[0] + (scale[1] - scale[0]) * r[i, 0].item())
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * r[i, 1].item())
        cw = max(1, min(w, int(round(math.sqrt(area * ratio)))))
        ch = max(1, min(h, int(round(math.sqrt(area / ratio)))))
        y0 = int(r[i, 2].item() * (h - ch + 1))
        x0 = int(r[i, 3].item() * (w - cw + 1))
        crop = images[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw].float()
        crop = preprocess.resize_batch(crop, size, size)
        flips = int(r[i, 4].item() * 4)  # 0 none, 1 h, 2 v, 3 both: EL cell images have no up/down
        if flips & 1:
            crop = crop.flip(3)
        if flips & 2:
            crop = crop.flip(2)
        out[i] = crop[0]
    return out


def chunk_path(directory: Path, index: torch.Tensor) -> Path:
    return directory / f"chunk-{int(index[0]):08d}-{int(index[-1]) + 1:08d}.safetensors"


def chunks_of(n: int, world: int = 1) -> list[torch.Tensor]:
    """Image ranges of at most CHUNK images, at least one per rank (rank r labels chunks r, r + world, ...)."""
    size = max(1, min(CHUNK, -(-n // max(1, world))))
    return [torch.arange(a, min(n, a + size)) for a in range(0, n, size)]


def write_chunk(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def chunk_complete(path: Path) -> bool:
    """A chunk file that loads (atomic writes leave none half-written; a foreign or damaged one is redone)."""
    if not path.exists():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return "index" in f.keys() and "logits" in f.keys()
    except Exception:
        return False


def read_soft_labels(directory: Path, n: int) -> tuple[torch.Tensor, Optional[CachedViews]]:
    """(logits N x C of the un-augmented images or, with views, N x K x C; the views or None), in image order."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("chunk-*.safetensors"))
    if not files:
        raise EdgekdError(f"no soft labels in {directory}; run the soft_labels stage")
    parts = [load_file(str(f)) for f in files]
    idx = torch.cat([p["index"] for p in parts])
    if len(idx) != n or set(idx.tolist()) != set(range(n)):
        raise EdgekdError(f"soft labels in {directory} do not cover the {n} training images; delete it to recompute")
    order = torch.empty_like(idx)
    order[idx] = torch.arange(len(idx))

    def cat(key: str) -> torch.Tensor:
        return torch.cat([p[key] for p in parts])[order]

    logits = cat("logits")
    if "r" not in parts[0]:
        return logits, None
    return logits, CachedViews(
        r=cat("r"), partner=cat("partner"), r_partner=cat("r_partner"), lam=cat("lam"), logits=logits
    )
