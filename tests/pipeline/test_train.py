"""Resume: an interrupted run continued with --resume reaches the same weights as an uninterrupted one."""

import json

import torch
import torch.nn.functional as F

from edgekd.pipeline.models import build_student
from edgekd.pipeline.train import TrainData, TrainSpec, predict_logits, train_model


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


def test_training_keeps_the_best_validation_epoch_and_its_weights(tmp_path):
    """On a real run: the kept epoch is the one with the highest validation accuracy, ties broken by the lower
    validation loss (then the earlier epoch), as history.json records them, and the returned weights reproduce
    that epoch's validation accuracy and loss."""
    torch.set_num_threads(1)
    data = _data()
    model = _model()
    res = train_model(model, _spec(tmp_path, 4, kd=None), data, torch.device("cpu"))
    saved = json.loads((tmp_path / "history.json").read_text())
    recs = saved["history"]
    assert [h["epoch"] for h in recs] == [1, 2, 3, 4] and all(h["train_loss"] > 0 for h in recs)
    want = max(recs, key=lambda h: (h["val_accuracy"], -h["val_loss"], -h["epoch"]))
    assert res.best_epoch == saved["best_epoch"] == want["epoch"], [(h["val_accuracy"], h["val_loss"]) for h in recs]
    assert res.best_val_accuracy == saved["best_val_accuracy"] == want["val_accuracy"]
    vl = predict_logits(model, data.val_x)
    assert (vl.argmax(1) == data.val_y).float().mean().item() == want["val_accuracy"]
    assert abs(F.cross_entropy(vl, data.val_y).item() - want["val_loss"]) < 1e-5


def _scripted(y: torch.Tensor, right: int, scale: float) -> torch.Tensor:
    """Validation logits that classify the first `right` images correctly, with confidence `scale`."""
    k = int(y.max()) + 1
    pred = torch.where(torch.arange(len(y)) < right, y, (y + 1) % k)
    return scale * F.one_hot(pred, k).float()


def test_best_epoch_rule_on_scripted_validation(tmp_path, monkeypatch):
    """Validation outcomes scripted per epoch (accuracy 6/12, 9/12, 9/12 with a lower loss, 6/12, 9/12): the kept
    epoch must be 3 (a tie on accuracy broken by the loss; not the first 9/12 epoch, not the last epoch) and the
    returned weights must be the weights that epoch 3 was validated with."""
    from edgekd.pipeline import train as train_mod

    data = _data()
    script = iter([(6, 1.0), (9, 1.0), (9, 2.0), (6, 1.0), (9, 1.0)])
    seen = []
    real = train_mod.predict_logits

    def fake(model, x, *a, **k):
        if x is not data.val_x:
            return real(model, x, *a, **k)
        seen.append({n: v.detach().clone() for n, v in model.state_dict().items()})
        return _scripted(data.val_y, *next(script))

    monkeypatch.setattr(train_mod, "predict_logits", fake)
    model = _model()
    res = train_model(model, _spec(tmp_path, 5, kd=None), data, torch.device("cpu"))
    assert len(seen) == 5
    losses = [h["val_loss"] for h in res.history]
    assert losses[2] < losses[1] and losses[2] < losses[4]  # the script does what it says
    saved = json.loads((tmp_path / "history.json").read_text())
    assert res.best_epoch == saved["best_epoch"] == 3 and saved["best_val_accuracy"] == 0.75
    got = model.state_dict()
    assert all(torch.equal(got[n], v) for n, v in seen[2].items())
    assert not all(torch.equal(got[n], v) for n, v in seen[4].items())  # the last epoch's weights differ
