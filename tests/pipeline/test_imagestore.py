"""data.cache: ram, disk and none hold the same bytes (so the same batches), and a disk cache build resumes."""

from __future__ import annotations

import pytest
import torch

from edgekd.pipeline import imagestore
from edgekd.pipeline.data import Item
from edgekd.pipeline.train import EpochBatches, TrainData
from tests.conftest import write_folder


@pytest.fixture()
def items(tmp_path):
    root = write_folder(tmp_path / "imgs", classes=3, per_class=7, mode="RGB")
    files = sorted(p for p in root.rglob("*.png"))
    import hashlib

    return [
        Item(key=str(f), path=str(f), label=i % 3, sha256=hashlib.sha256(f.read_bytes()).hexdigest())
        for i, f in enumerate(files)
    ]


def test_every_store_gives_the_same_images_and_batches(items, tmp_path):
    stores = {m: imagestore.open_store(items, 28, m, tmp_path / "cache") for m in ("ram", "disk", "none")}
    assert {s.kind for s in stores.values()} == {"ram", "disk", "none"}
    idx = torch.tensor([5, 0, 20, 5, 13])
    ref = stores["ram"][idx]
    assert ref.dtype == torch.uint8 and ref.shape == (5, 3, 32, 32)
    for m in ("disk", "none"):
        assert torch.equal(stores[m][idx], ref), m
    labels = torch.tensor([it.label for it in items])
    batches = {}
    for m, st in stores.items():
        d = TrainData(images=st, labels=labels, image_size=28, mean=(0.5,) * 3, std=(0.2,) * 3, num_classes=3)
        eb = EpochBatches(
            d, torch.randperm(len(items), generator=torch.Generator().manual_seed(0)), 8, 2, (0.6, 1.0), 1, 0.3
        )
        batches[m] = [eb[s] for s in range(2)]
    for m in ("disk", "none"):
        for a, b in zip(batches["ram"], batches[m]):
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["target"], b["target"]), m
    # the disk cache is a file of exactly N*3*S*S bytes, reused (not rebuilt) by the next open
    disk = stores["disk"]
    assert disk.path.stat().st_size == len(items) * 3 * 32 * 32
    mtime = disk.path.stat().st_mtime_ns
    assert imagestore.open_store(items, 28, "disk", tmp_path / "cache").path.stat().st_mtime_ns == mtime


def test_interrupted_disk_cache_build_resumes(items, tmp_path, monkeypatch):
    monkeypatch.setattr(imagestore, "BUILD_CHUNK", 4)
    real = imagestore._decode
    calls = []

    def dying(path, size):
        calls.append(path)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(imagestore, "_decode", dying)
    with pytest.raises(KeyboardInterrupt):
        imagestore.open_store(items, 28, "disk", tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.u8"))  # no half-built cache under the final name
    calls.clear()
    monkeypatch.setattr(imagestore, "_decode", lambda p, s: calls.append(p) or real(p, s))
    store = imagestore.open_store(items, 28, "disk", tmp_path / "c")
    assert len(calls) == len(items) - 8  # two complete chunks of 4 were kept
    ram = imagestore.open_store(items, 28, "ram", tmp_path / "c")
    assert torch.equal(store[torch.arange(len(items))], ram[torch.arange(len(items))])


def test_auto_picks_by_size_against_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(imagestore, "_available_memory", lambda: 4 * 10**9)
    assert imagestore.choose("auto", 1000, 183, tmp_path) == "ram"  # 0.1 GB
    assert imagestore.choose("auto", 50_000, 256, tmp_path) in ("disk", "none")  # 9.8 GB > 1 GB
    assert imagestore.choose("disk", 10, 10, tmp_path) == "disk"
