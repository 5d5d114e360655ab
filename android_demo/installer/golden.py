"""Golden vectors: what Python computes for some images, for the Java core's JUnit test to reproduce.

Per image (the run's test split first, then synthetic images): the RGB pixels, the input tensor of
the preprocessing contract (edgekd.pipeline.preprocess), the quantized input the model was fed, the
model's raw output as LiteRT gives it in Python (through edgekd.export.runtimes, the runtime layer
parity and the benchmark use), the logits and the top-k. GoldenVectorTest.java reads these files
(schema edgekd.golden/1): keep the keys and encodings (base64 of little-endian arrays) as they are.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgekd.export.runtimes import TfliteRunner
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.preprocess import SCALE, load_rgb, preprocess_rgb
from edgekd.pipeline.rundir import atomic_write_bytes

GOLDEN_SCHEMA = "edgekd.golden/1"
TOP_K = 3


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def synthetic_images(count: int, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Deterministic RGB uint8 images covering upsampling, downsampling, identity and grey input."""
    rng = np.random.default_rng(1234)
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # small colour noise: upsampling
            img = rng.integers(0, 256, size=(max(2, height // 3 + 1), max(2, width // 2 + 3), 3), dtype=np.uint8)
        elif kind == 1:  # larger smooth gradient + noise: downsampling, both axes different
            h, w = height * 2 + 7, width * 3 + 1
            yy, xx = np.mgrid[0:h, 0:w]
            img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=2).astype(np.int32)
            img = np.clip(img + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
        elif kind == 2:  # exactly the input size: resize must be the identity
            img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        else:  # grey stripes (replicated to 3 channels as the decoder does), tall and thin
            stripes = (np.arange(height * 3)[:, None] // 3 % 2) * 200
            g = (stripes + rng.integers(0, 50, size=(height * 3, max(2, width // 2)))).astype(np.uint8)
            img = np.repeat(g[..., None], 3, axis=2)
        out.append((f"synthetic-{i}", img))
    return out


def split_test_images(run_dir: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """Up to `count` images of the run's test split (data/split.json), classes taken in turn."""
    split_path = Path(run_dir) / "data" / "split.json"
    if count <= 0 or not split_path.is_file():
        return []
    try:
        items = [it for it in json.loads(split_path.read_text()).get("items", []) if it.get("split") == "test"]
    except ValueError:
        return []
    by_label: dict[Any, list[dict]] = {}
    for it in sorted(items, key=lambda it: str(it.get("key", it.get("path")))):
        by_label.setdefault(it.get("label"), []).append(it)
    queues = [by_label[k] for k in sorted(by_label, key=str)]
    picked: list[dict] = []
    while len(picked) < count and any(queues):
        for q in queues:
            if q and len(picked) < count:
                picked.append(q.pop(0))
    out = []
    for it in picked:
        p = Path(it["path"])
        if not p.is_absolute():
            p = Path(run_dir) / p
        try:
            out.append((f"test:{it.get('key', p.name)}", load_rgb(p)))
        except (OSError, ValueError):
            continue  # a moved or unreadable image only costs one golden vector
    return out


def reference_tensor(rgb: np.ndarray, meta: dict, layout: Optional[str] = None) -> np.ndarray:
    """The Python contract (pipeline.preprocess) with model.json's size, mean/std and layout (or `layout`)."""
    i = meta["input"]
    if abs(float(i.get("scale", SCALE)) - SCALE) > 1e-12:
        # the app would honour another scale, but the contract (and so the golden tensor) is x/255
        raise EdgekdError(f"model.json input.scale is {i['scale']}, not the preprocessing contract's 1/255")
    return preprocess_rgb(rgb, i["height"], i["width"], i["mean"], i["std"], layout=layout or i["layout"])


def _quantization(details: dict) -> tuple[float, int]:
    scale, zp = details["quantization"]
    return float(scale), int(zp)


def run_golden(
    model_path: Path, meta: dict, images: list[tuple[str, np.ndarray]], prefix: str
) -> list[tuple[str, dict]]:
    """(file name, golden record) per image, from the model run in Python with LiteRT."""
    runner = TfliteRunner(model_path, threads=1, layout=meta["input"]["layout"])
    inp, out = runner.input_details, runner.output_details
    k = min(TOP_K, meta["num_classes"])
    records = []
    for n, (source, rgb) in enumerate(images):
        x = reference_tensor(rgb, meta, layout="NCHW")  # the runner takes NCHW and converts the layout
        tensor = reference_tensor(rgb, meta)  # in the model's layout: what the Java core must produce
        feed = runner.prepare(x)
        qin = None
        if np.dtype(inp["dtype"]) in (np.int8, np.uint8):
            scale, zp = _quantization(inp)
            qin = {"scale": scale, "zero_point": zp, "dtype": np.dtype(inp["dtype"]).name, "q_b64": _b64(feed)}
        raw = np.array(runner.infer(feed))
        oq = None
        if np.dtype(raw.dtype) in (np.int8, np.uint8):
            scale, zp = _quantization(out)
            oq = {"scale": scale, "zero_point": zp}
        logits = runner.postprocess(raw).reshape(-1)
        if meta["output"].get("kind", "logits") == "logits":
            e = np.exp(logits.astype(np.float64) - logits.max())
            probs = e / e.sum()
        else:
            probs = logits.astype(np.float64)
        order = sorted(range(len(logits)), key=lambda j: (-float(logits[j]), j))[:k]
        name = f"{prefix}_{n:02d}.json"
        records.append(
            (
                name,
                {
                    "schema": GOLDEN_SCHEMA,
                    "source": source,
                    "model": meta,
                    "image": {
                        "width": int(rgb.shape[1]),
                        "height": int(rgb.shape[0]),
                        "rgb_b64": _b64(rgb.astype(np.uint8)),
                    },
                    "input": {
                        "shape": list(map(int, inp["shape"])),
                        "float_b64": _b64(tensor.astype("<f4")),
                        "quantization": qin,
                    },
                    "output": {
                        "shape": list(map(int, out["shape"])),
                        "dtype": np.dtype(raw.dtype).name,
                        "raw_b64": _b64(raw.astype(raw.dtype.newbyteorder("<"))),
                        "quantization": oq,
                    },
                    "logits": [float(v) for v in logits],
                    "probabilities": [float(v) for v in probs],
                    "topk": [{"index": j, "label": meta["labels"][j], "score": float(probs[j])} for j in order],
                },
            )
        )
    return records


def write_golden(
    model_path: Path, meta: dict, out_dir: Path, count: int, run_dir: Optional[Path] = None, prefix: str = "golden"
) -> list[Path]:
    """Writes golden JSON files + index.txt into out_dir, removing golden files of earlier installs."""
    i = meta["input"]
    images = split_test_images(run_dir, count) if run_dir else []
    images += synthetic_images(count - len(images), i["height"], i["width"])
    records = run_golden(model_path, meta, images, prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rec in records:
        atomic_write_bytes(out_dir / name, (json.dumps(rec) + "\n").encode())
        written.append(out_dir / name)
    atomic_write_bytes(out_dir / "index.txt", "".join(f"{p.name}\n" for p in written).encode())
    keep = {p.name for p in written} | {"index.txt"}
    for stale in out_dir.glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    return written
