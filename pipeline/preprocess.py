"""The preprocessing contract shared by training eval, export parity, benchmarks and the Android app.

decode -> RGB uint8 (grey replicated, alpha dropped, 16-bit scaled to 8-bit) -> float 0..255 ->
bilinear resize straight to HxW (half-pixel centres, no antialias, edge clamp) -> x*scale ->
(x-mean)/std -> NCHW or NHWC. `model.json` names this "bilinear_half_pixel"; the Java core in
android_demo/core implements the same steps and is tested against these outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_ALGORITHM = "bilinear_half_pixel"
SCALE = 1.0 / 255.0


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode (L, LA, P, RGBA, I;16, I, F, CMYK, ...) -> HxWx3 uint8 RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit sources map their full range to 8 bits; float images are taken as 0..1.
        top = 1.0 if img.mode == "F" else 65535.0
        arr = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode != "RGB":
        # L/LA/P/RGBA/CMYK: PIL drops alpha without premultiplying, as the Java core does.
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy shares it


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return pil_to_rgb(img)


def resize_batch(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float NCHW -> float NCHW with the contract's resize (a no-op when the size already matches)."""
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in 0..255."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    return resize_batch(x, height, width)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float NCHW 0..255 -> normalised NCHW."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * SCALE - m) / s


def preprocess_rgb(
    rgb: np.ndarray,
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
    layout: str = "NCHW",
) -> np.ndarray:
    """The whole contract for one image: HxWx3 uint8 -> (1,3,H,W) or (1,H,W,3) float32."""
    x = normalize(resize_rgb(rgb, height, width), mean, std)
    if layout == "NHWC":
        x = x.permute(0, 2, 3, 1)
    elif layout != "NCHW":
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)
