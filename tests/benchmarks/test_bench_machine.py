import pytest

from edgekd.benchmarks import machine
from edgekd.pipeline.errors import EdgekdError


def test_profiles_record_requested_vs_available():
    avail = machine.available_cpus()
    tab = machine.resolve_profile("tablet")
    assert tab["threads_requested"] == 4
    assert tab["threads"] == min(4, len(avail)) and tab["cpus"] == avail[: tab["threads"]]
    big = machine.resolve_profile("big-core")
    assert big["threads_requested"] == 1 and big["threads"] == 1
    assert machine.resolve_profile("3")["profile"] == "3-threads"
    assert [p["profile"] for p in machine.parse_profiles("tablet,big-core,tablet")] == ["tablet", "big-core"]
    with pytest.raises(EdgekdError, match="unknown bench profile"):
        machine.resolve_profile("phone")


def test_count_macs_of_a_known_net():
    import torch.nn as nn

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    # 32 px: conv1 16x16x8 outputs x 27; depthwise 16x16x8 x 9; linear 8x4
    assert machine.count_macs(net, 32) == 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 32


def test_peak_states_its_assumption():
    p = machine.peak_gmacs(2)
    assert "FMA" in p["assumption"] and p["cores_used"] == 2
    if p["clock_ghz"]:
        assert p["peak_gmacs_per_s"] == pytest.approx(2 * p["clock_ghz"] * p["fma_units"] * p["fp32_lanes"], rel=1e-3)
    d = machine.describe()
    assert d["cores_available"] >= 1 and "onnxruntime" in d["runtimes"]
