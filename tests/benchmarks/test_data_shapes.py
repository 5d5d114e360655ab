"""Generated data sets of many shapes (edgekd.benchmarks.data_shapes) and the benchmark command over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.benchmarks import data_shapes as ds
from tests.conftest import TINY_OVERRIDES

# the shared tiny schedule, with the quick preset's step-sized schedules and KD auto turned off
TINY = [*TINY_OVERRIDES, "teacher.min_steps=0", "train.min_steps=0", "kd.alpha=0.9"]


def test_class_counts_balanced_and_ten_to_one():
    assert ds.class_counts(600, 10) == [60] * 10
    assert ds.class_counts(601, 10).count(61) == 1 and sum(ds.class_counts(601, 10)) == 601
    n = ds.class_counts(1000, 5, 10.0)
    assert sum(n) == 1000
    assert n == sorted(n, reverse=True)
    assert 9.0 <= n[0] / n[-1] <= 11.0  # largest / smallest is the asked ratio
    ratios = [a / b for a, b in zip(n, n[1:])]
    assert max(ratios) / min(ratios) < 1.05  # geometric decay: a constant ratio between neighbours
    assert min(ds.class_counts(20, 10, 10.0)) == 2  # every class keeps the 2 images a split needs
    with pytest.raises(ValueError):
        ds.class_counts(10, 6)


@pytest.mark.parametrize(
    "images,classes,size,mode,imbalance",
    [(60, 4, 28, "L", 10.0), (30, 3, 70, "RGB", 1.0), (6, 2, 512, "RGB", 1.0)],
)
def test_make_dataset_writes_the_asked_shape(tmp_path, images, classes, size, mode, imbalance):
    root = tmp_path / "d"
    counts = ds.make_dataset(root, images=images, classes=classes, size=size, mode=mode, imbalance=imbalance)
    assert counts == dict(zip([ds.class_name(c) for c in range(classes)], ds.class_counts(images, classes, imbalance)))
    assert sorted(p.name for p in root.iterdir()) == sorted(counts)
    for name, n in counts.items():
        files = sorted((root / name).iterdir())
        assert [f.name for f in files] == [f"img_{i:05d}.png" for i in range(n)]
        for f in files:
            with Image.open(f) as im:
                assert (im.format, im.mode, im.size) == ("PNG", mode, (size, size))
    if imbalance > 1:
        assert max(counts.values()) / min(counts.values()) == pytest.approx(imbalance, rel=0.15)


def test_make_dataset_is_deterministic_from_its_seed(tmp_path):
    def arrays(root, seed):
        ds.make_dataset(root, images=12, classes=3, size=40, mode="RGB", seed=seed)
        return [np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))]

    a, b, c = arrays(tmp_path / "a", 0), arrays(tmp_path / "b", 0), arrays(tmp_path / "c", 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, z) for x, z in zip(a, c))
    with pytest.raises(FileExistsError):  # never mixes a new set into an old one
        ds.make_dataset(tmp_path / "a", images=12, classes=3, size=40, mode="RGB")


def test_every_class_has_its_own_definition():
    n = ds.MAX_CLASSES
    assert n >= 50
    specs = [ds.class_spec(c) for c in range(n)]
    assert len({(s.family, s.freq, s.variant, s.outline) for s in specs}) == n
    assert len({ds.class_name(c) for c in range(n)}) == n
    with pytest.raises(ValueError):
        ds.class_counts(1000, n + 1)


def _ncm_accuracy(train: np.ndarray, ytr: np.ndarray, test: np.ndarray, yte: np.ndarray, k: int) -> float:
    """Nearest class mean on standardised features."""
    mu, sd = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mu) / sd, (test - mu) / sd
    means = np.stack([train[ytr == c].mean(0) for c in range(k)])
    return float((((test[:, None] - means[None]) ** 2).sum(-1).argmin(1) == yte).mean())


def test_classes_are_told_apart_by_texture_not_by_pixel_templates():
    """Learnable but not trivial: a nearest-class-mean classifier on the (translation-invariant) magnitude
    spectrum is far above chance, the same classifier on downsampled raw pixels is not (random phase, rotation,
    position, scale and colour), so a model has to learn textures rather than pixel templates."""
    k, size = 10, 48

    def features(seed: int, n: int):
        pix, spec, y = [], [], []
        for c in range(k):
            for i in range(n):
                a = np.asarray(ds.to_pil(ds.render(c, size, np.random.default_rng([seed, c, i])), "L"), np.float32)
                a /= 255
                pix.append(a[::3, ::3].ravel())
                spec.append(np.log1p(np.abs(np.fft.fft2(a - a.mean()))[: size // 2, : size // 2]).ravel())
                y.append(c)
        return np.array(pix), np.array(spec), np.array(y)

    ptr, str_, ytr = features(0, 30)
    pte, ste, yte = features(1, 15)
    by_texture = _ncm_accuracy(str_, ytr, ste, yte, k)
    by_pixels = _ncm_accuracy(ptr, ytr, pte, yte, k)
    assert by_texture >= 3.5 / k, by_texture
    assert by_pixels <= 0.5 * by_texture, (by_pixels, by_texture)


def test_shapes_cover_the_issue_ranges():
    shapes = list(ds.SHAPES.values())
    assert min(s.images for s in shapes) < 100 and max(s.images for s in shapes) >= 1000
    assert {2, 50} <= {s.classes for s in shapes}
    assert {1.0, 10.0} <= {s.imbalance for s in shapes}
    assert {28, 512} <= {s.size for s in shapes}
    assert {"L", "RGB"} == {s.mode for s in shapes}
    for s in shapes:  # every class has enough images for train / val / test
        assert min(ds.class_counts(s.images, s.classes, s.imbalance)) >= 8, s.name


def test_benchmark_command_writes_its_tables_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ds.SHAPES, "tiny", ds.Shape("tiny", 45, 3, 32, "L", 3.0))
    out, work = tmp_path / "res" / "shapes", tmp_path / "work"
    argv = ["--shapes", "tiny", "--seeds", "2", "--out", str(out), "--work", str(work)]
    for s in [*TINY, "gate.max_accuracy_drop=-100"]:  # a gate that always fails: exit 3, results still read
        argv += ["--set", s]
    assert ds.main(argv) == 0
    doc = json.loads(Path(f"{out}.json").read_text())
    assert {"command", "date", "machine", "seeds", "shapes"} <= set(doc)
    assert doc["command"].startswith("python -m edgekd.benchmarks.data_shapes --shapes tiny --seeds 2")
    (row,) = doc["shapes"]
    assert row["exit_code"] == 3 and row["error"] == ""
    assert [g["name"] for g in row["gates"] if not g["passed"]] == ["max_accuracy_drop"]
    assert row["shape"] == {"name": "tiny", "images": 45, "classes": 3, "size": 32, "mode": "L", "imbalance": 3.0,
                            "note": ""}  # fmt: skip
    assert sum(row["class_counts"].values()) == 45
    assert row["command"].startswith("edgekd run --preset quick --data ") and "--seeds 2" in row["command"]
    for name in ("teacher", "student", "baseline"):
        assert 0 <= row[name]["accuracy"] <= 1 and 0 <= row[name]["macro_f1"] <= 1
    assert len(row["student"]["accuracy_per_seed"]) == 2 and row["student"]["accuracy_std"] is not None
    assert row["student"]["accuracy"] == pytest.approx(np.mean(row["student"]["accuracy_per_seed"]))
    assert 1 / 3 <= row["majority_share"] < 1
    assert {"seeds", "kd_gain_mean", "kd_gain_ci95", "mcnemar_p"} <= set(row["kd_verdict"])
    assert row["kd_verdict"]["seeds"] == 2
    assert {"data", "teacher", "evaluate"} <= set(row["stage_seconds"]) and row["wall_s"] > 0
    md = Path(f"{out}.md").read_text()
    assert doc["command"] in md and doc["machine"] in md and doc["date"] in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| shape |"))
    for col in ("images", "classes", "px", "mode", "imbalance", "majority", "teacher", "student", "baseline",
                "F1 student", "KD gain", "wall"):  # fmt: skip
        assert col in header
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| tiny |")]
    assert f"| {100 * row['student']['accuracy']:.1f}% ± " in line and "3:1" in line
    assert "- tiny: gate failed: student trails teacher by" in md

    # the same shape and settings again: not rerun, same figures
    report = work / "tiny" / "run" / "report.json"
    mtime = report.stat().st_mtime_ns
    capsys.readouterr()
    assert ds.main(argv) == 0
    assert "up to date" in capsys.readouterr().err
    assert report.stat().st_mtime_ns == mtime
    assert json.loads(Path(f"{out}.json").read_text())["shapes"][0]["student"] == row["student"]
    # other settings make the finished run stale
    cfg = ds.expected_config(work / "tiny" / "data", 2, [*TINY, "kd.temperature=3.0"])
    assert ds.up_to_date(ds.SHAPES["tiny"], work / "tiny" / "benchmark.json", report.parent, cfg) is None


def test_a_failed_run_is_a_row_not_an_abort(tmp_path, monkeypatch):
    """A run that exits 2 (here a misspelt config key) leaves a row with its code and error line; the table is
    still written."""
    monkeypatch.setitem(ds.SHAPES, "tiny", ds.Shape("tiny", 12, 2, 28, "RGB"))
    out = tmp_path / "shapes"
    argv = ["--shapes", "tiny", "--out", str(out), "--work", str(tmp_path / "w"), "--set", "train.epochz=2"]
    assert ds.main(argv) == 0
    (row,) = json.loads(Path(f"{out}.json").read_text())["shapes"]
    assert row["exit_code"] == 2
    assert "train.epochz" in row["error"]
    assert row["student"]["accuracy"] is None
    assert "train.epochz" in Path(f"{out}.md").read_text()
