"""Validation and test through the data.cache store: every kind gives evaluate the same logits, and no reader
decodes or normalises a whole split at once (issue 14)."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import torch
import yaml

from edgekd.pipeline import imagestore, preprocess, stages, train
from edgekd.pipeline.data import decode_resized, load_split
from edgekd.pipeline.rundir import RunDir


def _copy(tiny_run, dest, mode: str) -> RunDir:
    shutil.copytree(tiny_run, dest)
    p = dest / "config.yaml"
    raw = yaml.safe_load(p.read_text())
    raw["data"]["cache"] = mode
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    (dest / "eval" / "logits.npz").unlink()  # evaluate runs again
    return RunDir(dest)


def test_evaluate_reads_the_test_split_a_batch_at_a_time_with_any_cache(tiny_run, tmp_path, monkeypatch):
    def whole_split(*a, **k):
        raise AssertionError("evaluate decoded a list of images as one float tensor")

    monkeypatch.setattr(stages, "decode_resized", whole_split)
    monkeypatch.setattr(stages, "predict_logits", functools.partial(train.predict_logits, batch_size=4))
    in_passes = []  # images read by the model passes

    def predict_many(models, x, **kw):
        before = sum(reads)
        out = train.predict_many(models, x, **{**kw, "batch_size": 4})
        in_passes.append((len(models), sum(reads) - before))
        return out

    monkeypatch.setattr(stages, "predict_many", predict_many)
    # reads counted in this process (DataLoader workers for `none` have their own test: test_imagestore.py)
    monkeypatch.setattr(stages, "loader_workers", lambda *a: 0)
    monkeypatch.setattr(stages, "teacher_logits_of", functools.partial(stages.teacher_logits_of, chunk=4))
    reads = []
    real = imagestore.Normalised.__getitem__

    def read(self, idx):
        out = real(self, idx)
        reads.append(len(out) if out.dim() == 4 else 1)
        return out

    monkeypatch.setattr(imagestore.Normalised, "__getitem__", read)
    ref = np.load(tiny_run / "eval" / "logits.npz")
    n_test = len(ref["labels"])
    passes = {}
    for mode in ("ram", "disk", "none"):
        run = _copy(tiny_run, tmp_path / mode, mode)
        in_passes.clear()
        stages.stage_evaluate(run.config(), run, load_split(run))
        passes[mode] = list(in_passes)
        got = np.load(run.path("eval", "logits.npz"))
        assert set(got.files) == set(ref.files)
        for k in ref.files:
            if got[k].dtype.kind == "f":
                # float sums depend on the thread count an earlier test in this process left set: 1e-5, not 0
                np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5, err_msg=f"{mode} {k}")
            else:
                assert np.array_equal(got[k], ref[k]), (mode, k)
    assert n_test > 4 and reads and max(reads) <= 4  # every read was one batch, never the split
    # teacher and every seed of student and baseline in one pass: each test image is read (with `none`,
    # decoded from its file) once, not once per model; then the students' fidelity pass over training images
    seeds, n_train = run.config().train.seeds, len(load_split(run).subset("train"))
    want = [(1 + 2 * seeds, n_test), (2 * seeds, n_train)]
    assert passes == {mode: want for mode in ("ram", "disk", "none")}
    assert len(list((tmp_path / "disk" / "cache").glob("test-*.f32"))) == 1
    assert not (tmp_path / "none" / "cache").exists() or not list((tmp_path / "none" / "cache").glob("*.f32"))


def test_validation_reads_its_store(tiny_run, tmp_path):
    for mode in ("disk", "none"):
        run = _copy(tiny_run, tmp_path / mode, mode)
        cfg, data = run.config(), load_split(run)
        td = stages.train_data(run, data, cfg)
        assert isinstance(td.val_x, imagestore.Normalised) and td.val_x.kind == mode
        want = preprocess.normalize(
            decode_resized(data.subset("val"), cfg.data.image_size, desc=None), cfg.data.mean, cfg.data.std
        )
        assert torch.equal(td.val_x[:], want)
        # a teacher at its own input size validates at that size
        assert stages.train_data(run, data, cfg, size=40).val_x.shape[-1] == 40
