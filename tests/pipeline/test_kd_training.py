"""What the distillation losses compute inside training, checked against independent computations.

Each test runs a tiny `train_model` with recorders around the batches, the teacher, the loss and the feature
adapter, then recomputes what the loss should have been given: DKD from its paper formula on the cached (and, under
mixup, mixed) teacher logits; online KD from the teacher run again on the very batch the student saw; feature
KD from the hooked layers' shapes and the adapter's own loss over the run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from edgekd.pipeline import preprocess
from edgekd.pipeline import train as train_mod
from edgekd.pipeline.losses import FeatureAdapter, dkd_loss, kd_loss
from edgekd.pipeline.models import build_student
from edgekd.pipeline.train import TrainData, TrainSpec, train_model

K, SIZE, N = 3, 24, 48


def _data(teacher_logits: bool = True) -> TrainData:
    g = torch.Generator().manual_seed(0)
    return TrainData(
        images=torch.randint(0, 256, (N, 3, SIZE + 4, SIZE + 4), dtype=torch.uint8, generator=g),
        labels=torch.arange(N) % K,
        image_size=SIZE,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        val_x=torch.randn(12, 3, SIZE, SIZE, generator=g),
        val_y=torch.arange(12) % K,
        # every row different, so a row names its image
        teacher_logits=3 * torch.randn(N, K, generator=g) if teacher_logits else None,
        num_classes=K,
    )


def _spec(out, **kw) -> TrainSpec:
    base = dict(name="t", out_dir=out, epochs=2, lr=1e-2, batch_size=16, temperature=2.0, seed=1, amp=False)
    base.update(kw)
    return TrainSpec(**base)


def _net(seed: int, width: float = 0.25):
    torch.manual_seed(seed)
    return build_student("mobilenet_v3_small", K, width_mult=width)


class _Recorder:
    """Wraps module-level functions of edgekd.pipeline.train and keeps their arguments and results."""

    def __init__(self, monkeypatch):
        self.batches: list[dict] = []
        self.losses: list[dict] = []
        self.dkd: list[dict] = []
        getitem = train_mod.EpochBatches.__getitem__
        loss, dkd = train_mod._loss, train_mod.dkd_loss

        def rec_getitem(batches, s):
            b = getitem(batches, s)
            self.batches.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()})
            return b

        def rec_loss(spec, s_logits, t_logits, y, target, lam, t_partner, ce_offset=None):
            out = loss(spec, s_logits, t_logits, y, target, lam, t_partner, ce_offset)
            rec = {"s": s_logits, "t": t_logits, "y": y, "target": target, "partner": t_partner}
            rec = {k: None if v is None else v.detach().clone() for k, v in rec.items()}
            self.losses.append({**rec, "lam": lam, "out": out.item()})
            return out

        def rec_dkd(s, t, target, alpha, beta, temperature):
            out = dkd(s, t, target, alpha, beta, temperature)
            self.dkd.append(
                {"s": s.detach().clone(), "t": t.detach().clone(), "cls": target.clone(), "out": out.item()}
            )
            self.dkd[-1].update(alpha=alpha, beta=beta, T=temperature)
            return out

        monkeypatch.setattr(train_mod.EpochBatches, "__getitem__", rec_getitem)
        monkeypatch.setattr(train_mod, "_loss", rec_loss)
        monkeypatch.setattr(train_mod, "dkd_loss", rec_dkd)


def _dkd_by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float) -> float:
    """DKD (Zhao et al., CVPR 2022, eq. 7): CE + alpha * KL(b_t || b_s) + beta * KL(p^_t || p^_s), all at
    temperature T and scaled by T^2, with b the (target, all others) binary distribution and p^ the softmax over
    the non-target classes alone (the target column removed, not masked). Float64, row by row."""
    total = 0.0
    s, t = s.double(), t.double()
    for i in range(len(y)):
        c = int(y[i])
        ps, pt = F.softmax(s[i] / T, 0), F.softmax(t[i] / T, 0)
        bs, bt = torch.stack([ps[c], 1 - ps[c]]), torch.stack([pt[c], 1 - pt[c]])
        tckd = (bt * (bt / bs).log()).sum() * T * T
        keep = [j for j in range(len(s[i])) if j != c]
        qs, qt = F.softmax(s[i, keep] / T, 0), F.softmax(t[i, keep] / T, 0)
        nckd = (qt * (qt / qs).log()).sum() * T * T
        ce = -F.log_softmax(s[i], 0)[c]
        total += float(ce + alpha * tckd + beta * nckd)
    return total / len(y)


def test_dkd_loss_equals_the_paper_formula_on_a_batch():
    g = torch.Generator().manual_seed(3)
    s, t = 3 * torch.randn(6, 5, generator=g), 3 * torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    t[1, 4] = t[1].min() - 2  # a teacher that is wrong about row 1's class
    for alpha, beta, T in ((1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 3.0)):
        got = dkd_loss(s, t, y, alpha, beta, T).item()
        assert got == pytest.approx(_dkd_by_hand(s, t, y, alpha, beta, T), rel=1e-5)


def test_dkd_training_uses_cached_teacher_rows_mixed_partners_and_the_majority_class(tmp_path, monkeypatch):
    """kd.loss=dkd under batch mixup: each step's teacher logits are the cached rows of exactly the batch's images,
    mixed with their partners' rows as T*log(lam*p_t + (1-lam)*p_partner); the class DKD splits on is the one with
    the larger share of the mixed target; the loss DKD returned is the paper formula on those inputs, and it is the
    loss that was optimized (history's train_loss is its mean)."""
    data = _data()
    rec = _Recorder(monkeypatch)
    spec = _spec(tmp_path, kd_loss="dkd", mixup=0.4, dkd_alpha=1.0, dkd_beta=4.0)
    res = train_model(_net(0), spec, data, torch.device("cpu"))
    steps = len(rec.batches)
    assert steps == len(rec.losses) == len(rec.dkd) == res.steps > 0
    mixed = 0
    for b, lo, d in zip(rec.batches, rec.losses, rec.dkd):
        assert torch.equal(lo["t"], data.teacher_logits[b["idx"]])
        assert torch.equal(lo["partner"], data.teacher_logits[b["partner"]])
        lam, T = b["lam"], spec.temperature
        want_t = T * (lam * F.softmax(lo["t"] / T, 1) + (1 - lam) * F.softmax(lo["partner"] / T, 1)).log()
        assert torch.allclose(d["t"], want_t, atol=1e-5)
        assert torch.equal(d["cls"], b["target"].argmax(1))
        assert torch.equal(d["cls"], b["y"] if lam >= 0.5 else data.labels[b["partner"]])
        mixed += not torch.equal(d["cls"], b["y"])
        assert d["out"] == pytest.approx(_dkd_by_hand(d["s"], d["t"], d["cls"], 1.0, 4.0, T), rel=1e-4)
        assert lo["out"] == d["out"]
    per_epoch = len(rec.dkd) // 2
    for e, h in enumerate(res.history):
        outs = [d["out"] for d in rec.dkd[e * per_epoch : (e + 1) * per_epoch]]
        assert h["train_loss"] == pytest.approx(sum(outs) / len(outs), rel=1e-6)
    assert mixed or all(b["lam"] >= 0.5 for b in rec.batches)


def _teacher():
    t = _net(7, width=0.5)
    # a trained-looking teacher: running statistics that are not the defaults, so eval and train mode differ
    with torch.no_grad():
        for m in t.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return t


def test_online_kd_teacher_sees_the_students_exact_augmented_batch(tmp_path, monkeypatch):
    """kd.mode=online under mixup: at every step the teacher (in eval mode, never updated) is run on the very
    normalised, augmented, mixed batch the student is trained on, and its outputs are the logits the KD loss uses;
    the loss equals kd_loss recomputed from the teacher run again on that batch."""
    data = _data(teacher_logits=False)
    rec = _Recorder(monkeypatch)
    teacher, student = _teacher(), _net(0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen_t, seen_s = [], []
    teacher.register_forward_hook(
        lambda m, i, o: seen_t.append((i[0].detach().clone(), o.detach().clone(), m.training))
    )
    student.register_forward_hook(
        lambda m, i, o: seen_s.append(i[0].detach().clone()) if torch.is_grad_enabled() and m.training else None
    )
    spec = _spec(tmp_path, kd_loss="kd", alpha=0.7, mixup=0.4)
    res = train_model(student, spec, data, torch.device("cpu"), teacher=teacher)
    assert len(seen_t) == len(seen_s) == len(rec.batches) == len(rec.losses) == res.steps > 0
    for (tx, tout, training), sx, b, lo in zip(seen_t, seen_s, rec.batches, rec.losses):
        assert not training
        want_x = preprocess.normalize(b["x"], data.mean, data.std)
        assert torch.equal(tx, sx) and torch.allclose(tx, want_x, atol=1e-6)
        assert lo["partner"] is None and torch.equal(lo["t"], tout)
        with torch.no_grad():
            again = teacher.eval()(want_x)
        assert torch.allclose(again, tout, atol=1e-5)
        target = b["target"] if b["target"] is not None else b["y"]
        want = kd_loss(lo["s"], F.softmax(again / spec.temperature, 1), target, 0.7, spec.temperature)
        assert lo["out"] == pytest.approx(want.item(), rel=1e-5)
    assert any(b["lam"] < 1 for b in rec.batches)  # the batches were mixed
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_feature_kd_hooks_adapter_shapes_and_the_adapter_loss_falls(tmp_path, monkeypatch):
    """kd.feature: the adapter maps the student layer's channels to the teacher layer's (1x1 conv, shapes from
    the hooked layers), its inputs are those layers' outputs on the training batch, its MSE is added to the
    KD loss with feature_weight, the adapter's weights are trained, and its loss falls over training."""
    data = _data(teacher_logits=False)
    rec = _Recorder(monkeypatch)
    feats: list[dict] = []
    init: list[torch.Tensor] = []

    class Recording(FeatureAdapter):
        def forward(self, fs, ft):
            if not feats:
                init.append(self.proj.weight.detach().clone())
            out = super().forward(fs, ft)
            feats.append({"fs": fs.shape, "ft": ft.detach().clone(), "out": out.item(), "adapter": self})
            return out

    monkeypatch.setattr(train_mod, "FeatureAdapter", Recording)
    teacher, student = _teacher(), _net(0)
    layers = ("features.4", "features.3")
    shapes = {}
    for name, net, layer in (("t", teacher, layers[0]), ("s", student, layers[1])):
        h = dict(net.named_modules())[layer].register_forward_hook(
            lambda m, i, o, n=name: shapes.__setitem__(n, o.shape)
        )
        with torch.no_grad():
            net.eval()(torch.zeros(2, 3, SIZE, SIZE))
        h.remove()
    seen_t = []
    teacher.register_forward_hook(lambda m, i, o: seen_t.append(i[0].detach().clone()))
    spec = _spec(tmp_path, kd_loss="kd", epochs=8, feature_layers=layers, feature_weight=0.5, lr=5e-3)
    res = train_model(student, spec, data, torch.device("cpu"), teacher=teacher)
    assert len(feats) == len(rec.losses) == res.steps
    ad = feats[0]["adapter"]
    assert all(f["adapter"] is ad for f in feats)
    assert ad.proj.weight.shape == (shapes["t"][1], shapes["s"][1], 1, 1)
    assert not torch.allclose(ad.proj.weight, init[0])  # the adapter is trained with the student (one optimizer)
    for f, tx in zip(feats, seen_t[1:]):  # seen_t[0]: the probe forward that learns the shapes
        assert f["fs"][1:] == shapes["s"][1:] and f["ft"].shape[1:] == shapes["t"][1:]
        with torch.no_grad():  # the teacher features the adapter matched are the teacher layer's on this batch
            grab: list[torch.Tensor] = []
            h = dict(teacher.named_modules())[layers[0]].register_forward_hook(lambda m, i, o, g=grab: g.append(o))
            teacher.eval()(tx)
            h.remove()
        assert torch.allclose(f["ft"], grab[0], atol=1e-5)
    # the optimized loss is the KD loss plus feature_weight * the adapter's MSE
    per_epoch = res.steps // spec.epochs
    hist = json.loads((tmp_path / "history.json").read_text())["history"]
    for e, h in enumerate(hist):
        tot = [lo["out"] + 0.5 * f["out"] for lo, f in zip(rec.losses, feats)][e * per_epoch : (e + 1) * per_epoch]
        assert h["train_loss"] == pytest.approx(sum(tot) / len(tot), rel=1e-5)
    first, last = [f["out"] for f in feats[:3]], [f["out"] for f in feats[-3:]]
    assert sum(last) < 0.7 * sum(first), [round(f["out"], 4) for f in feats]
