import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.pipeline.losses import FeatureAdapter, FeatureHook, dkd_loss, kd_loss, soft_cross_entropy


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    s = sum(e)
    return [x / s for x in e]


def test_kd_loss_matches_hand_computation():
    s = [2.0, 0.5, -1.0]
    t = [1.0, 1.5, -0.5]
    y, alpha, T = 1, 0.9, 4.0
    ps = _softmax([x / T for x in s])
    pt = _softmax([x / T for x in t])
    kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    ce = -math.log(_softmax(s)[y])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor([s]), F.softmax(torch.tensor([t]) / T, 1), torch.tensor([y]), alpha, T)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_alpha_zero_is_cross_entropy_and_batch_mean():
    s = torch.tensor([[1.0, 2.0], [0.3, -0.2]])
    y = torch.tensor([0, 1])
    tp = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert kd_loss(s, tp, y, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)
    # identical distributions: the KL term vanishes
    same = kd_loss(s, F.softmax(s / 3.0, 1), y, alpha=1.0, temperature=3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_soft_cross_entropy_with_one_hot_equals_hard():
    s = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 2, 2])
    assert soft_cross_entropy(s, F.one_hot(y, 4).float()).item() == pytest.approx(
        F.cross_entropy(s, y).item(), rel=1e-6
    )


def test_dkd_matches_hand_computation():
    s = [2.0, 0.5, -1.0]
    t = [1.0, 1.5, -0.5]
    y, a, b, T = 0, 1.0, 8.0, 2.0
    ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
    bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
    tckd = sum(p * (math.log(p) - math.log(q)) for p, q in zip(bt, bs)) * T * T
    nt_s = _softmax([s[i] / T for i in range(3) if i != y])
    nt_t = _softmax([t[i] / T for i in range(3) if i != y])
    nckd = sum(p * (math.log(p) - math.log(q)) for p, q in zip(nt_t, nt_s)) * T * T
    ce = -math.log(_softmax(s)[y])
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), a, b, T)
    assert got.item() == pytest.approx(ce + a * tckd + b * nckd, rel=1e-4)


def test_feature_hook_and_adapter():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, stride=2))
    hook = FeatureHook(net, "0")
    net(torch.randn(2, 3, 8, 8))
    assert hook.output.shape == (2, 4, 8, 8)
    hook.remove()
    ad = FeatureAdapter(4, 6)
    loss = ad(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 3, 3))
    assert loss.item() > 0
    from edgekd.pipeline.errors import EdgekdError

    with pytest.raises(EdgekdError, match="did you mean"):
        FeatureHook(net, "01")
