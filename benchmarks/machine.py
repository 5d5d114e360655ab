"""Thread profiles standing for devices and the compute bound, on top of THE machine description.

The machine itself (CPU, clock, SIMD, runtime versions) is edgekd.pipeline.machine.describe().

Compute bound (a goal, not a test): a model's MACs at batch 1 divided by the CPU's peak fp32
fused-multiply-add rate, peak = cores_used x clock x FMA units x SIMD lanes. Assumptions,
stated in the report: 2 FMA units per core; lanes from /proc/cpuinfo flags (AVX-512F: 16 fp32,
AVX2+FMA: 8, otherwise SSE: 4 with no FMA, counted as 1 unit); clock = cpufreq max if the OS
exposes it, else /proc/cpuinfo "cpu MHz" (the current clock; turbo is ignored).
"""

from __future__ import annotations

import os

from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.machine import available_cpus, describe, max_freq_ghz, simd

__all__ = [
    "PROFILES",
    "available_cpus",
    "count_macs",
    "describe",
    "parse_profiles",
    "peak_gmacs",
    "resolve_profile",
    "simd",
]

# Thread profiles standing for devices: requested threads.
PROFILES: dict[str, int] = {"tablet": 4, "big-core": 1}


def resolve_profile(name: str) -> dict:
    """'tablet' | 'big-core' | 'N' / 'N-threads' -> {profile, threads_requested, threads, cpus, pinned}."""
    name = name.strip()
    if name in PROFILES:
        req = PROFILES[name]
    else:
        digits = name.removesuffix("-threads").removesuffix("-thread")
        if not digits.isdigit() or int(digits) < 1:
            raise EdgekdError(
                f"unknown bench profile {name!r}; use {', '.join(PROFILES)} or a thread count like 2-threads"
            )
        req = int(digits)
        name = f"{req}-threads"
    avail = available_cpus()
    cpus = avail[: min(req, len(avail))]
    return {
        "profile": name,
        "threads_requested": req,
        "threads": len(cpus),
        "cpus": cpus,
        "pinned": hasattr(os, "sched_setaffinity"),
        "cores_available": len(avail),
    }


def parse_profiles(profiles: list[str] | str) -> list[dict]:
    if isinstance(profiles, str):
        profiles = [p for p in profiles.split(",") if p.strip()]
    if not profiles:
        raise EdgekdError("no bench profile given; use --profile tablet,big-core")
    out, seen = [], set()
    for p in profiles:
        r = resolve_profile(p)
        if r["profile"] not in seen:
            seen.add(r["profile"])
            out.append(r)
    return out


def peak_gmacs(cores_used: int) -> dict:
    """Peak fp32 multiply-accumulates per second (1e9) for `cores_used` cores, with its assumptions."""
    ghz, src = max_freq_ghz()
    s = simd()
    per_core = None if ghz is None else ghz * s["fma_units"] * s["fp32_lanes"]
    return {
        "cores_used": cores_used,
        "clock_ghz": None if ghz is None else round(ghz, 3),
        "clock_source": src,
        **s,
        "peak_gmacs_per_s": None if per_core is None else round(per_core * cores_used, 2),
        "assumption": f"peak = cores_used x clock x {s['fma_units']} FMA units x {s['fp32_lanes']} fp32 lanes "
        f"({s['isa']}); 1 FMA = 1 MAC; clock from {src}; memory bandwidth ignored",
    }


def count_macs(model, image_size: int) -> int:
    """Multiply-accumulates of one batch-1 forward pass over Conv2d and Linear layers (forward hooks)."""
    import torch
    import torch.nn as nn

    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += int(out[0].numel()) * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += int(out[0].numel()) * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return total
