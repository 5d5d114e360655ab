import os
import urllib.error

import pytest
import torch

from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.models import build_student, build_teacher, load_state_dict_file, save_state_dict


class Payload:
    """Unpickling this would run code: a checkpoint carrying it must be refused, not executed."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/edgekd_pwned",))


def test_pickle_payload_checkpoint_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload()}, p)
    if os.path.exists("/tmp/edgekd_pwned"):
        os.remove("/tmp/edgekd_pwned")
    with pytest.raises(EdgekdError, match="refused to load"):
        load_state_dict_file(p)
    assert not os.path.exists("/tmp/edgekd_pwned")


def test_weights_roundtrip_safetensors_and_torch(tmp_path):
    m = build_student("mobilenet_v3_small", 3, width_mult=0.5)
    save_state_dict(m, tmp_path / "m.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in m.state_dict().items()}}, tmp_path / "m.pt")
    for f in ("m.safetensors", "m.pt"):
        m2 = build_student("mobilenet_v3_small", 3, width_mult=0.5, weights=str(tmp_path / f))
        for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
            assert torch.equal(a, b), k
    with pytest.raises(EdgekdError, match="not found"):
        load_state_dict_file(tmp_path / "missing.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(EdgekdError, match="not a valid safetensors"):
        load_state_dict_file(tmp_path / "junk.safetensors")


def test_teacher_from_local_file_detects_head(tmp_path):
    model, info = build_teacher("resnet18", None, 4, 32)
    assert not info.has_head
    save_state_dict(model, tmp_path / "t.safetensors")
    again, info2 = build_teacher("resnet18", str(tmp_path / "t.safetensors"), 4, 32)
    assert info2.has_head  # same 4-class head: no fine-tuning needed
    other, info3 = build_teacher("resnet18", str(tmp_path / "t.safetensors"), 7, 32)
    assert not info3.has_head and other.fc.out_features == 7
    assert torch.equal(other.conv1.weight, model.conv1.weight)  # backbone kept
    with pytest.raises(EdgekdError, match="does not look like"):
        build_teacher("efficientnet_lite0", str(tmp_path / "t.safetensors"), 4, 32)


def test_efficientnet_lite_imagenet_weights_are_bundled():
    model, info = build_teacher("efficientnet_lite0", "imagenet", 4, 64)
    assert info.source == "imagenet" and model._fc.out_features == 4
    # real weights, not an init: the stem's BN statistics were learned
    assert not torch.allclose(model._bn0.running_var, torch.ones_like(model._bn0.running_var))


def test_offline_torchvision_download_gives_clear_error(monkeypatch):
    def no_network(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(EdgekdError, match="teacher.weights=/path/to/file"):
        build_teacher("resnet18", "IMAGENET1K_V1", 4, 32)
    with pytest.raises(EdgekdError, match="unknown teacher.arch 'resnet15'; did you mean"):
        build_teacher("resnet15", None, 4, 32)
