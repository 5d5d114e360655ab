"""Training batches do not depend on how many ranks share them (mixup pairs included), nor on the teacher mode."""

from __future__ import annotations

import pytest
import torch

from edgekd.pipeline.train import EpochBatches, TrainData, TrainSpec, _loss
from edgekd.pipeline.views import CachedViews, draw_views


def _data(n=24, k=3, views=False):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 20, 20), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 4
    labels[::7] = -1  # some unlabelled images (data.unlabeled)
    cv = None
    if views:
        v = draw_views(torch.arange(n), n, k, seed=0, mixup=0.4)
        cv = CachedViews(**v, logits=torch.randn(n, k, 4, generator=g))
    return TrainData(
        images=images, labels=labels, image_size=16, mean=(0.5,) * 3, std=(0.2,) * 3, num_classes=4, views=cv
    )


@pytest.mark.parametrize("views", [False, True])
def test_two_ranks_see_the_halves_of_the_one_rank_batch(views):
    d = _data(views=views)
    order = torch.randperm(len(d.labels), generator=torch.Generator().manual_seed(1))
    one = EpochBatches(d, order, 8, 3, (0.5, 1.0), seed=3, mixup=0.4)
    two = [EpochBatches(d, order, 8, 3, (0.5, 1.0), seed=3, mixup=0.4, rank=r, world=2) for r in (0, 1)]
    for s in range(3):
        a = one[s]
        halves = [t[s] for t in two]
        for key in ("x", "y", "idx", "target", "teacher", "partner"):
            if a[key] is None:
                assert all(h[key] is None for h in halves), key
                continue
            assert torch.equal(a[key], torch.cat([h[key] for h in halves])), key
        assert a["target"] is not None  # mixup (batch or per view) always yields soft targets here
        # an image mixed with an unlabelled one (or unlabelled itself) has no hard label: zero target row
        unl = a["y"] < 0
        assert (a["target"][unl].sum(1) == 0).all()


def test_fixed_teacher_under_mixup_mixes_the_partners_distribution():
    spec = TrainSpec(name="s", out_dir=".", epochs=1, lr=1e-3, batch_size=4, kd_loss="kd", alpha=1.0, temperature=2.0)
    s_logits = torch.randn(4, 3)
    t, tp = torch.randn(4, 3), torch.randn(4, 3)
    target = torch.softmax(torch.randn(4, 3), 1)
    got = _loss(spec, s_logits, t, torch.zeros(4, dtype=torch.long), target, 0.7, tp)
    mix = 0.7 * torch.softmax(t / 2, 1) + 0.3 * torch.softmax(tp / 2, 1)
    want = 4.0 * torch.nn.functional.kl_div(torch.log_softmax(s_logits / 2, 1), mix, reduction="batchmean")
    assert torch.allclose(got, want, atol=1e-6)
