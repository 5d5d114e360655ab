"""data.cache: ram, disk and none hold the same bytes (so the same batches), and a disk cache build resumes."""

from __future__ import annotations

import os
import pickle

import numpy as np
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


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_eval_stores_hold_the_contract_values_exactly(items, tmp_path):
    """Validation and test stores hold the contract's unrounded resize: normalised a batch at a time, every kind
    equals decoding and normalising the whole split at once (what evaluation computed before stores existed)."""
    from edgekd.pipeline import preprocess
    from edgekd.pipeline.data import decode_resized

    raw = decode_resized(items, 28, desc=None)
    assert not torch.equal(raw, raw.round())  # 40 px -> 28 px: rounding to uint8 would move these values
    want = preprocess.normalize(raw, MEAN, STD)
    for m in ("ram", "disk", "none"):
        view = imagestore.Normalised(imagestore.open_eval_store(items, 28, m, tmp_path / "c", what="test"), MEAN, STD)
        assert view.kind == m and view.shape == (len(items), 3, 28, 28) and len(view) == len(items)
        assert torch.equal(view[:], want), m
        assert torch.equal(view[5:9], want[5:9]) and torch.equal(view[-1], want[-1])
        assert torch.equal(view[torch.tensor([3, 0, 3])], want[[3, 0, 3]])
        assert np.array_equal(view.array(7, batch_size=3), want[:7].numpy())
        npy = view.array(path=tmp_path / f"{m}.npy", batch_size=4)
        assert np.array_equal(np.load(tmp_path / f"{m}.npy"), want.numpy()) and isinstance(npy, np.memmap)
        assert np.array_equal(view.array(scratch=tmp_path / "scratch"), want.numpy())
    assert not list((tmp_path / "scratch").iterdir())  # the scratch file has no name
    # disk files: named by split and layout, so val, test and the training images never share one
    test = imagestore.open_eval_store(items, 28, "disk", tmp_path / "c", what="test")
    val = imagestore.open_eval_store(items[:5], 28, "disk", tmp_path / "c", what="val")
    train = imagestore.open_store(items, 28, "disk", tmp_path / "c")
    assert test.path.name.startswith("test-") and test.path.suffix == ".f32"
    assert test.path.stat().st_size == len(items) * 3 * 28 * 28 * 4
    assert val.path.name.startswith("val-") and val.path != test.path
    assert train.path.name.startswith("images-") and train.path.suffix == ".u8"
    assert not list((tmp_path / "c").glob("*.partial")) and not list((tmp_path / "c").glob("*.lock"))
    # DataLoader workers started by spawn get a pickled store: it carries the path, not the images
    blob = pickle.dumps(test)
    assert len(blob) < 4096 and torch.equal(pickle.loads(blob)[:], test[:])


def test_auto_counts_the_bytes_of_the_layout(items, monkeypatch, tmp_path):
    # 21 images: 3*28*28 B each as uint8 (49 KB; the training layout is 32 px: 65 KB), 4x that as float32
    monkeypatch.setattr(imagestore, "_available_memory", lambda: 4 * 100_000)  # auto's ram limit: 100 KB
    assert imagestore.open_store(items, 28, "auto", tmp_path / "c").kind == "ram"
    assert imagestore.open_eval_store(items, 28, "auto", tmp_path / "c", what="test").kind == "disk"


def test_none_store_is_decoded_in_dataloader_workers(items, tmp_path, monkeypatch):
    """data.cache=none with train.num_workers=0: training and validation images are decoded in DataLoader
    workers, not in the training process, and the run equals one on the ram store."""
    from edgekd.pipeline.models import build_student
    from edgekd.pipeline.train import TrainSpec, train_model

    pids = tmp_path / "pids"
    real_u8, real_f32 = imagestore._decode, imagestore.decode_contract

    def recorded(real):
        def decode(path, size):
            with open(pids, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            return real(path, size)

        return decode

    monkeypatch.setattr(imagestore, "_decode", recorded(real_u8))
    monkeypatch.setattr(imagestore, "decode_contract", recorded(real_f32))
    labels = torch.tensor([it.label for it in items])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-repeatable CPU kernels
    runs = {}
    try:
        for m in ("ram", "none"):
            data = TrainData(
                images=imagestore.open_store(items, 24, m, tmp_path / "c"),
                labels=labels,
                image_size=24,
                mean=MEAN,
                std=STD,
                val_x=imagestore.Normalised(
                    imagestore.open_eval_store(items[:6], 24, m, tmp_path / "c", "val"), MEAN, STD
                ),
                val_y=labels[:6],
                num_classes=3,
            )
            pids.unlink(missing_ok=True)
            torch.manual_seed(0)
            model = build_student("mobilenet_v3_small", 3, width_mult=0.25)
            spec = TrainSpec(name=m, out_dir=tmp_path / m, epochs=2, lr=1e-2, batch_size=8, seed=1, mixup=0.2)
            res = train_model(model, spec, data, torch.device("cpu"), num_workers=0)
            runs[m] = (model.state_dict(), [(h["train_loss"], h["val_accuracy"], h["val_loss"]) for h in res.history])
            if m == "none":
                decoded_by = set(pids.read_text().split())
    finally:
        torch.set_num_threads(threads)
    assert decoded_by and str(os.getpid()) not in decoded_by  # all decoding happened in worker processes
    assert runs["ram"][1] == runs["none"][1]
    assert all(torch.equal(v, runs["none"][0][k]) for k, v in runs["ram"][0].items())
