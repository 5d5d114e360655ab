import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.data import check_image, prepare_data
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.preprocess import load_rgb, preprocess_rgb
from edgekd.pipeline.rundir import RunDir
from tests.conftest import make_image, write_folder


def _bad_corpus(root):
    """A class folder with every kind of broken file next to good ones."""
    d = root / "class_0"
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(d / "bomb.png")  # over the pixel limit below
    return ["empty.png", "notes.txt", "truncated.png", "bomb.png"]


def test_bad_files_stop_with_one_line_naming_them(tmp_path):
    root = write_folder(tmp_path / "data", per_class=4)
    bad = _bad_corpus(root)
    cfg = DataConfig(source=str(root), max_pixels=70 * 70)
    with pytest.raises(EdgekdError) as e:
        prepare_data(cfg, RunDir(tmp_path / "run"))
    msg = str(e.value)
    assert "\n" not in msg and "4 bad image file(s)" in msg and "--skip-bad-images" in msg
    for name in bad:
        assert name in msg
    assert "zero-byte" in msg and "not an image" in msg and "max_pixels" in msg and "unreadable" in msg


def test_skip_bad_images_lists_them_in_report(tmp_path):
    root = write_folder(tmp_path / "data", per_class=4)
    bad = _bad_corpus(root)
    run = RunDir(tmp_path / "run")
    split = prepare_data(DataConfig(source=str(root), max_pixels=70 * 70, skip_bad_images=True), run)
    rep = json.loads(run.data_report.read_text())
    assert sorted(b["file"].split("/")[-1] for b in rep["skipped"]) == sorted(bad)
    assert rep["num_images"] == 16 and len(split.items) == 16
    assert {it.split for it in split.items} >= {"train", "test"}


def test_mixed_formats_all_decode_to_rgb(tmp_path):
    root = tmp_path / "data"
    write_folder(root, per_class=3)
    d = root / "class_1"
    g = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(g).save(d / "sixteen.png")  # 16-bit greyscale
    Image.fromarray(np.full((20, 30, 4), 200, np.uint8), "RGBA").save(d / "alpha.png")
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8), "RGB").save(d / "photo.jpg", quality=90)
    Image.fromarray(np.full((20, 30), 7, np.uint8), "L").convert("P").save(d / "palette.png")
    split = prepare_data(DataConfig(source=str(root)), RunDir(tmp_path / "run"))
    assert len(split.items) == 16
    for name in ("sixteen.png", "alpha.png", "photo.jpg", "palette.png"):
        rgb = load_rgb(d / name)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert load_rgb(d / "sixteen.png").max() == 255  # full 16-bit range maps to 8 bits
    x = preprocess_rgb(load_rgb(d / "alpha.png"), 8, 8, (0.5,) * 3, (0.25,) * 3, "NHWC")
    assert x.shape == (1, 8, 8, 3) and np.allclose(x, (200 / 255 - 0.5) / 0.25, atol=1e-5)


def test_empty_class_and_too_few_classes(tmp_path):
    root = write_folder(tmp_path / "data", classes=3, per_class=3)
    for f in (root / "class_2").iterdir():
        f.unlink()
    with pytest.raises(EdgekdError, match="class_2"):
        prepare_data(DataConfig(source=str(root)), RunDir(tmp_path / "run"))
    shutil.rmtree(root / "class_1"), shutil.rmtree(root / "class_2")
    with pytest.raises(EdgekdError, match="at least 2 class"):
        prepare_data(DataConfig(source=str(root)), RunDir(tmp_path / "run"))
    with pytest.raises(EdgekdError, match="not found"):
        prepare_data(DataConfig(source=str(tmp_path / "nope")), RunDir(tmp_path / "run"))


def test_split_is_deterministic_stratified_and_leakage_is_reported(tmp_path):
    root = write_folder(tmp_path / "data", per_class=12)
    a = prepare_data(DataConfig(source=str(root), seed=3), RunDir(tmp_path / "r1"))
    b = prepare_data(DataConfig(source=str(root), seed=3), RunDir(tmp_path / "r2"))
    assert [(i.key, i.split) for i in a.items] == [(i.key, i.split) for i in b.items]
    for c in range(4):
        assert sum(1 for i in a.items if i.label == c and i.split == "test") == 3  # 25% of 12
    assert a.report["cross_split_duplicates"] == []


def test_cross_split_duplicates_are_reported_and_same_split_ones_are_not(tmp_path):
    """Explicit train/ and test/ folders fix each file's split, so both cases are certain: a test image copied
    into train/ under another name is one leak naming both files; a copy inside test/ is no cross-split leak."""
    root = tmp_path / "data"
    write_folder(root / "train", per_class=6)
    for c in range(4):  # test images other than the train ones (write_folder's images depend on class and index)
        (root / "test" / f"class_{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(make_image(c, 100 + i), "L").save(root / "test" / f"class_{c}" / f"t_{i}.png")
    clean = prepare_data(DataConfig(source=str(root), val_fraction=0.0), RunDir(tmp_path / "r0"))
    assert clean.report["cross_split_duplicates"] == []
    src = sorted((root / "test" / "class_1").iterdir())[0]
    shutil.copy(src, root / "test" / "class_1" / "zz_same_split.png")
    same = prepare_data(DataConfig(source=str(root), val_fraction=0.0), RunDir(tmp_path / "r1"))
    assert same.report["cross_split_duplicates"] == []
    shutil.copy(src, root / "train" / "class_1" / "zz_leak.png")
    c = prepare_data(DataConfig(source=str(root), val_fraction=0.0), RunDir(tmp_path / "r2"))
    leaks = c.report["cross_split_duplicates"]
    assert len(leaks) == 1, leaks
    files = "".join(leaks[0]["files"])
    assert "zz_leak.png" in files and src.name in files


def test_explicit_split_folders(tmp_path):
    root = tmp_path / "data"
    write_folder(root / "train", per_class=4)
    write_folder(root / "test", per_class=2)
    split = prepare_data(DataConfig(source=str(root), val_fraction=0.25), RunDir(tmp_path / "run"))
    assert sum(1 for i in split.items if i.split == "test") == 8
    assert all(i.key.startswith("test/") for i in split.items if i.split == "test")
    assert sum(1 for i in split.items if i.split == "val") == 4


def test_elpv_is_the_default_and_has_four_classes(tmp_path):
    cfg = DataConfig(limit_per_class=5)
    split = prepare_data(cfg, RunDir(tmp_path / "run"))
    assert split.classes == ["defect_0", "defect_1_3", "defect_2_3", "defect_1"]
    assert len(split.items) == 20 and split.report["source"] == "elpv"
    assert load_rgb(split.items[0].path).shape == (300, 300, 3)


def test_check_image_ok(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(p)
    problem, digest = check_image(str(p), 100)
    assert problem is None and len(digest) == 64
