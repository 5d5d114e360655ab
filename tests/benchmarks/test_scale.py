"""benchmarks/scale.py: deterministic generated radiographs, memory split into anonymous and file-backed for a
whole process tree, and rows for every size and stage from real `edgekd run` processes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgekd.benchmarks import scale


def test_generated_images_are_deterministic_balanced_and_distinct(tmp_path):
    a = scale.generate(tmp_path / "a", 12, classes=3, px=64, seed=5, jobs=1)
    b = scale.generate(tmp_path / "b", 12, classes=3, px=64, seed=5, jobs=2)  # other processes, same bytes
    assert a["written"] == b["written"] == 12 and a["bytes"] == b["bytes"] > 0
    files = [scale.image_path(tmp_path / "a", i, 3) for i in range(12)]
    for i, f in enumerate(files):
        assert f.read_bytes() == scale.image_path(tmp_path / "b", i, 3).read_bytes()
        with Image.open(f) as im:
            assert im.mode == "L" and im.size == (64, 64)
    assert len({f.read_bytes() for f in files}) == 12
    assert scale.generate(tmp_path / "a", 12, classes=3, px=64, seed=5)["written"] == 0  # kept, not redrawn
    other = scale.radiograph(0, 3, 64, seed=6)[1]
    assert not np.array_equal(other, np.asarray(Image.open(files[0])))
    # a smaller size is the first n images, as links, n/classes per class
    sub = scale.subset(tmp_path / "a", tmp_path / "sub", 6, classes=3)
    links = sorted(sub.rglob("*.png"))
    assert len(links) == 6 and all(p.is_symlink() for p in links)
    assert sorted(len(list((sub / f"class_{c}").iterdir())) for c in range(3)) == [2, 2, 2]
    assert {p.resolve() for p in links} == {f.resolve() for f in files[:6]}


CHILD = """
import mmap, subprocess, sys, time
anon = bytearray(160 * 2**20)  # touched: resident anonymous memory
for i in range(0, len(anon), 4096):
    anon[i] = 1
with open(sys.argv[1], "rb") as fh:
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    total = sum(mm[i] for i in range(0, len(mm), 4096))  # read: resident file-backed pages
grand = subprocess.Popen([sys.executable, "-c",
    "b = bytearray(64 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\nimport time; time.sleep(1.5)"])
time.sleep(1.5)
grand.wait()
"""


def test_tree_memory_splits_anonymous_and_file_backed(tmp_path):
    data = tmp_path / "mapped.bin"
    data.write_bytes(b"\1" * (96 * 2**20))
    rc, wall, peak = scale.measured([sys.executable, "-c", CHILD, str(data)], {}, tmp_path / "log")
    assert rc == 0 and wall > 1
    # 160 MiB in the child + 64 MiB in its child (the tree is summed); the 96 MiB mapped file is not anonymous
    assert 160 + 64 <= peak["anon"] < 160 + 64 + 96, peak
    assert peak["file"] >= 96, peak
    assert peak["processes"] >= 2


@pytest.mark.slow
def test_scale_benchmark_rows_for_every_size_and_stage(tmp_path):
    out = tmp_path / "out" / "scale"
    cmd = [sys.executable, "-m", "edgekd.benchmarks.scale", "--sizes", "64,16", "--image-size", "32"]
    cmd += ["--source-px", "64", "--jobs", "1", "--work", str(tmp_path / "w"), "--out", str(out), "--keep-runs"]
    subprocess.run(cmd, check=True)
    res = json.loads(out.with_suffix(".json").read_text())
    assert [(r["n"], r["stage"]) for r in res["rows"]] == [(n, s) for n in (16, 64) for s in scale.STAGES]
    for r in res["rows"]:
        assert r["rc"] == 0 and r["img_per_s"] > 0 and r["train_images"] > 0, r
        assert r["peak_mib"]["anon"] > 50 and r["peak_mib"]["file"] > 0, r  # both parts measured
    assert all(r.get("train_img_per_s") for r in res["rows"] if r["stage"] in ("teacher", "student"))
    # data.cache=disk: the training split's uint8 store and the validation split's float32 store
    files = res["rows"][-1]["disk"]["cache_files"]
    assert any(f.startswith("images-") and f.endswith(".u8") for f in files), files
    assert any(f.startswith("val-") and f.endswith(".f32") for f in files), files
    assert res["rows"][-1]["disk"]["cache_bytes"] > 0
    ex = res["extrapolation"]
    assert ex["target_images"] == 500_000 and set(ex["stages"]) == set(scale.STAGES)
    md = out.with_suffix(".md").read_text()
    assert res["command"] in md and "Extrapolation" in md and "not a measurement" in md
    assert md.count("| 64 | ") == len(scale.STAGES) + 1  # the stage rows and the disk row
    # a later call with the same settings adds its size and keeps the earlier ones (and both commands)
    cmd2 = [c if c != "64,16" else "32" for c in cmd]
    subprocess.run(cmd2, check=True)
    res2 = json.loads(out.with_suffix(".json").read_text())
    assert sorted({r["n"] for r in res2["rows"]}) == [16, 32, 64]
    assert res2["command"].startswith(res["command"] + ", then ") and "--sizes 32" in res2["command"]
    assert res2["generation"] == res["generation"]  # the call that wrote the images


def test_extrapolation_is_the_line_through_two_sizes():
    def rows(n):
        disk = {"run_dir_bytes": 10**8 + 2000 * n, "cache_bytes": 1000 * n}
        return [
            {"n": n, "stage": s, "rc": 0, "wall_s": 5 + 0.01 * n, "peak_mib": {"anon": 400 + 0.001 * n}, "disk": disk}
            for s in scale.STAGES
        ]

    ex = scale.extrapolate(rows(1000) + rows(10_000), target=500_000, procs=8)
    assert ex["from_n"] == [1000, 10_000]
    assert ex["stages"]["data"]["wall_s"] == 5005  # one process: 5 s + 500k x 10 ms
    assert ex["stages"]["student"]["wall_s"] == round(5 + 5000 / 8)  # the per-image part over 8 processes
    assert ex["stages"]["teacher"]["anon_mib_per_process"] == 900 and ex["cache_gb"] == 0.5
    assert ex["run_dir_gb"] == 1.1
    assert scale.extrapolate(rows(1000) + rows(2000)) is None  # sizes too close for a line
