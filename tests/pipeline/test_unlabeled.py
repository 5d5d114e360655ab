"""data.unlabeled: teacher-labelled extra images in the KD term only, never a test image, and the coverage report."""

from __future__ import annotations

import json
import shutil

import torch
from PIL import Image

from edgekd.cli import main
from edgekd.pipeline.losses import kd_loss, soft_cross_entropy
from edgekd.pipeline.views import read_soft_labels
from tests.conftest import TINY_OVERRIDES, make_image


def test_hard_label_term_skips_unlabelled_rows():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    y = torch.tensor([0, -1, 2, 3, -1, 1])
    lab = y >= 0
    assert torch.allclose(soft_cross_entropy(logits, y), soft_cross_entropy(logits[lab], y[lab]))
    soft = torch.nn.functional.one_hot(y.clamp_min(0), 4).float() * lab.unsqueeze(1)
    assert torch.allclose(soft_cross_entropy(logits, soft), soft_cross_entropy(logits[lab], y[lab]))
    # the KD term still uses every row
    tp = torch.softmax(torch.randn(6, 4), 1)
    full = kd_loss(logits, tp, y, alpha=1.0, temperature=2.0)
    assert not torch.allclose(full, kd_loss(logits[lab], tp[lab], y[lab], alpha=1.0, temperature=2.0))


def test_unlabeled_images_enter_kd_only_and_never_the_test_split(tiny_folder, tiny_run, tmp_path):
    extra = tmp_path / "unlabeled"
    (extra / "scans").mkdir(parents=True)
    for i in range(6):  # new images of every class
        Image.fromarray(make_image(i % 4, 500 + i), "L").save(extra / "scans" / f"new_{i}.png")
    # the whole class_0 folder again: its test (and train/val) images must not reach the student
    shutil.copytree(tiny_folder / "class_0", extra / "copies")
    (extra / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    args = ["run", "--data", str(tiny_folder), "--out", str(out)]
    args += ["--stages", "data,teacher,soft_labels,student,baseline,evaluate"]
    for s in TINY_OVERRIDES + ["gate.max_accuracy_drop=100", f"data.unlabeled={extra}"]:
        args += ["--set", s]
    assert main(args) == 0

    split = json.loads((out / "data" / "split.json").read_text())
    test_hashes = {it["sha256"] for it in split["items"] if it["split"] == "test"}
    unl = [it for it in split["items"] if it["split"] == "unlabeled"]
    assert len(unl) == 6 and all(it["label"] == -1 for it in unl)
    assert not test_hashes & {it["sha256"] for it in unl}
    rep = json.loads((out / "data" / "report.json").read_text())["unlabeled"]
    n_test_c0 = sum(1 for it in split["items"] if it["split"] == "test" and it["label"] == 0)
    assert rep["removed_identical_to"]["test"] == n_test_c0 >= 1
    assert sum(rep["removed_identical_to"].values()) == 12
    assert [s["file"] for s in rep["skipped"]] == ["notes.txt"]

    # teacher and baseline are the same as without the extra images (skipped, same fingerprints); the student is not
    st0 = json.loads((tiny_run / "stages.json").read_text())
    st1 = json.loads((out / "stages.json").read_text())
    assert st1["teacher"]["fingerprint"] == st0["teacher"]["fingerprint"]
    assert st1["baseline"]["fingerprint"] == st0["baseline"]["fingerprint"]
    assert st1["student"]["fingerprint"] != st0["student"]["fingerprint"]
    n_train = sum(1 for it in split["items"] if it["split"] == "train")
    logits, _ = read_soft_labels(out / "soft_labels" / st1["soft_labels"]["fingerprint"], n_train + 6)
    assert logits.shape[0] == n_train + 6

    cov = json.loads((out / "report.json").read_text())["coverage"]
    assert cov["unlabeled"]["images"] == 6 and cov["test"]["images"] == len(test_hashes)
    assert set(cov["train"]["class_share"]) == set(split["classes"])
    assert isinstance(cov["flags"], list)
