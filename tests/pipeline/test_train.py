"""Resume: an interrupted run continued with --resume reaches the same weights as an uninterrupted one."""

import torch

from edgekd.pipeline.models import build_student
from edgekd.pipeline.train import TrainData, TrainSpec, train_model


def _data(n=48, size=24, k=3):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size + 4, size + 4), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % k
    return TrainData(
        images=images,
        labels=labels,
        image_size=size,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        val_x=torch.randn(12, 3, size, size, generator=g),
        val_y=torch.arange(12) % k,
        teacher_logits=torch.randn(n, k, generator=g),
        num_classes=k,
    )


def _spec(out, epochs, kd="kd"):
    return TrainSpec(
        name="t",
        out_dir=out,
        epochs=epochs,
        lr=1e-2,
        batch_size=16,
        mixup=0.2,
        kd_loss=kd,
        temperature=2.0,
        fingerprint="fp",
        seed=1,
    )


def _model():
    torch.manual_seed(0)
    return build_student("mobilenet_v3_small", 3, width_mult=0.25)


def test_resume_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)  # bitwise-repeatable CPU kernels
    data = _data()
    full = _model()
    r_full = train_model(full, _spec(tmp_path / "a", 3), data, torch.device("cpu"))
    # interrupted after 2 of 3 epochs: train with epochs=3 but stop by raising from the loss
    part = _model()
    spec = _spec(tmp_path / "b", 3)
    calls = {"n": 0}
    orig = torch.optim.AdamW.step

    def boom(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2 * (48 // 16):
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    torch.optim.AdamW.step = boom
    try:
        try:
            train_model(part, spec, data, torch.device("cpu"))
        except KeyboardInterrupt:
            pass
    finally:
        torch.optim.AdamW.step = orig
    resumed = _model()
    r_res = train_model(resumed, spec, data, torch.device("cpu"), resume=True)
    assert r_res.resumed_from == 2
    assert [h["train_loss"] for h in r_res.history] == [h["train_loss"] for h in r_full.history]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    data = _data()
    train_model(_model(), _spec(tmp_path, 1), data, torch.device("cpu"))
    spec = _spec(tmp_path, 2)
    spec.fingerprint = "other"
    res = train_model(_model(), spec, data, torch.device("cpu"), resume=True)
    assert res.resumed_from == 0 and len(res.history) == 2


def test_training_learns_and_keeps_best_val_weights(tmp_path):
    data = _data()
    res = train_model(_model(), _spec(tmp_path, 2, kd=None), data, torch.device("cpu"))
    assert res.best_epoch in (1, 2) and (tmp_path / "history.json").exists()
    assert all(h["train_loss"] > 0 for h in res.history)
