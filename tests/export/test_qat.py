"""Quantization-aware fine-tuning (export/qat.py), the int8 source choice (export.to_onnx.int8_model) and the
XNNPACK-friendly activation rewrite, on tiny models (no pipeline run needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from edgekd.export.graph import xnnpack_friendly
from edgekd.export.int8_latency import _model as bn_calibrated_model
from edgekd.export.qat import ActFakeQuant, attach_quant_points, qat_finetune

SIZE = 32


def _tiny_student() -> nn.Module:
    """MobileNetV3-Small (4 classes) whose BN statistics come from data, so activations have real ranges."""
    return bn_calibrated_model(SIZE, _images(32, 100))


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (n, 3, 1, 1)) + rng.normal(0, 0.7, (n, 3, SIZE, SIZE))
    return base.astype(np.float32)


def _on_grid(w: torch.Tensor, qmax: int = 127) -> float:
    """Largest distance of w / per-channel scale from an integer."""
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / qmax
    q = w / scale.view(-1, *([1] * (w.dim() - 1)))
    return float((q - q.round()).abs().max())


def test_quant_points_follow_the_converters():
    m = _tiny_student()
    qp = attach_quant_points(m, logits_layer=m.classifier[-1])
    names = [p.name for p in qp.points]
    assert "input" in names and len(names) == len(set(names))
    hswish = sum(1 for mod in m.modules() if isinstance(mod, nn.Hardswish))
    assert hswish > 0 and sum(n.endswith(":gate") for n in names) == hswish
    residual = sum(1 for mod in m.modules() if getattr(mod, "use_res_connect", False))
    se = sum(1 for mod in m.modules() if isinstance(mod, torchvision.ops.SqueezeExcitation))
    assert residual > 0 and sum(n.endswith(":residual") for n in names) == residual
    assert sum(n.endswith(":product") for n in names) == se
    # a conv followed by BN is never a point (BN is folded), nor a BN followed by a ReLU (fused); the logits
    # layer is not either (both int8 artifacts keep the logits float)
    mods = dict(m.named_modules())
    folded = {
        f"{p}.{a}"
        for p, seq in m.named_modules()
        if isinstance(seq, nn.Sequential)
        for (a, x), (_, y) in zip(list(seq.named_children()), list(seq.named_children())[1:])
        if (isinstance(x, nn.Conv2d) and isinstance(y, nn.BatchNorm2d))
        or (isinstance(x, nn.BatchNorm2d) and isinstance(y, nn.ReLU))
    }
    assert folded and not folded & set(names)
    assert "classifier.3" not in names and "classifier.0" in names and "classifier.1" in names
    x = torch.from_numpy(_images(8, 1))
    qp.set_mode("observe")
    with torch.no_grad():
        ref = m(x)
    qp.set_mode("quant")
    # every point rounds what reaches it to the nearest of 256 levels of its calibrated range (zero included),
    # as the converters' uint8 activations do: |out - in| <= scale / 2 inside the range, clamped outside
    rounded = []
    real_call = ActFakeQuant.__call__

    def recording(self, v):
        out = real_call(self, v)
        rounded.append((self, v.detach().clone(), out.detach().clone()))
        return out

    ActFakeQuant.__call__ = recording
    try:
        with torch.no_grad():
            m(x)
    finally:
        ActFakeQuant.__call__ = real_call
    assert {p.name for p, _, _ in rounded} == set(names)
    for p, v, out in rounded:
        lo, hi = min(p.lo, 0.0), max(p.hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        assert (out - v.clamp(lo, hi)).abs().max().item() <= scale / 2 + 1e-6 * max(1.0, hi - lo), p.name
        levels = (out - out.min()) / scale
        assert (levels - levels.round()).abs().max().item() < 1e-3, p.name  # on the grid
    seen = {}
    picked = [n for n in names if n in mods and isinstance(mods[n], (nn.BatchNorm2d, nn.Hardswish))][:4]
    # clone: torchvision's activations run in place on the tensor a BN hook returned
    hooks = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o.clone())) for n in picked]
    with torch.no_grad():
        out = m(x)
    for h in hooks:
        h.remove()
    qp.remove()
    # hooked outputs take at most 256 values. End to end, 8-bit rounding at every one of the ~120 points of this
    # untrained net moves the logits by 17% of their norm (measured on these images), so 30% is the bound; the
    # exact per-point check above is the tight one. Argmax agreement is not asserted: an untrained net's class
    # margins (about 0.02) are below the rounding noise, so its argmax is noise too (measured: 4 of 8 agree);
    # agreement on a trained student is the export parity gate's job.
    assert seen and all(torch.unique(v).numel() <= 256 for v in seen.values())
    rel = ((out - ref).norm() / ref.norm()).item()
    assert not torch.equal(out, ref) and rel < 0.3, rel


def test_qat_weights_on_int8_grid_and_source_untouched():
    m = _tiny_student()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = qat_finetune(m, _images(48, 2), _images(16, 3), epochs=1, batch_size=16, weight_qmax=64)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"qat_finetune changed the source model ({k})"
    q = res.model
    assert type(q) is type(m) and set(q.state_dict()) == set(m.state_dict())  # plain model, no parametrizations
    for name, mod in q.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            assert _on_grid(mod.weight.detach(), qmax=64) < 1e-3, name  # onnxruntime's reduce_range grid
    assert res.info["steps"] == 3 and res.info["history"][0]["epoch"] == 1
    assert np.isfinite(res.info["history"][0]["loss"])


def test_qat_reduces_the_simulated_int8_error():
    """The point of QAT: with int8 rounding simulated, the fine-tuned model is closer to the float student
    than the student itself is when rounded the same way (logit MSE on the calibration images)."""
    from edgekd.export import qat

    m = _tiny_student()
    train, calib = _images(64, 4), _images(32, 5)
    with torch.no_grad():
        ref = m(torch.from_numpy(calib))

    def simulated_mse(model: nn.Module) -> float:
        model = __import__("copy").deepcopy(model)
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                torch.nn.utils.parametrize.register_parametrization(mod, "weight", qat.WeightFakeQuant())
        qp = attach_quant_points(model, logits_layer=qat._last_linear(model))
        qat._calibrate(model, qp, calib)
        with torch.no_grad():
            out = model(torch.from_numpy(calib))
        qp.remove()
        return float(((out - ref) ** 2).mean())

    res = qat_finetune(m, train, calib, epochs=4, batch_size=16, lr=1e-5)
    before, after = simulated_mse(m), simulated_mse(res.model)
    assert res.info["kept_epoch"] > 0 and after < 0.8 * before, (before, after)
    best = min(h["calibration_mse"] for h in res.info["history"])
    assert after == pytest.approx(best, rel=1e-4)  # the kept weights are the best epoch's


def test_int8_source_modes(tmp_path):
    """int8_qat: off -> the student itself; auto with a reachable target -> the student, PTQ figure recorded;
    on -> a fine-tuned copy, reported."""
    pytest.importorskip("onnxruntime")
    from edgekd.export.context import ExportContext
    from edgekd.export.to_onnx import int8_model, onnx_graph

    m = _tiny_student()
    calib = _images(16, 6)

    def ctx(**opts):
        return ExportContext(
            model=m,
            arch="mobilenet_v3_small",
            labels=list("abcd"),
            image_size=SIZE,
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            calib=calib,
            work=tmp_path / str(len(list(tmp_path.iterdir()))),
            threads=1,
            source_sha256="-",
            options={"int8_qat_epochs": 1, **opts},
            train_images=lambda n: _images(min(n, 32), 7),
        )

    off = ctx(int8_qat="off")
    assert int8_model(off) is m and off.cache["qat_info"] == {"used": False, "mode": "off"}
    auto = ctx(int8_qat="auto", int8_target_agreement=0.0)
    assert int8_model(auto) is m and 0 <= auto.cache["qat_info"]["ptq_calibration_agreement"] <= 1
    on = ctx(int8_qat="on")
    q = int8_model(on)
    info = on.cache["qat_info"]
    assert q is not m and info["used"] and info["images"] == 32 and info["epochs"] == 1
    assert onnx_graph(on, int8_source=True) != onnx_graph(on)
    with pytest.raises(Exception, match="int8_qat"):
        int8_model(ctx(int8_qat="sometimes"))


@pytest.mark.parametrize("int8", [False, True])
def test_xnnpack_friendly_rewrite_keeps_the_maths(int8):
    m = _tiny_student()
    f = xnnpack_friendly(m, int8=int8)
    kinds = {type(mod) for mod in f.modules()}
    assert nn.Hardsigmoid not in kinds and (nn.Hardswish not in kinds) == int8
    assert any(isinstance(mod, nn.Hardsigmoid) for mod in m.modules())  # the original is untouched
    x = torch.from_numpy(_images(4, 8))
    with torch.no_grad():
        torch.testing.assert_close(f(x), m(x), rtol=1e-5, atol=1e-5)
