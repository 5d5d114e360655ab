"""The machine a benchmark ran on, thread profiles standing for devices, and the compute bound.

Compute bound (a goal, not a test): a model's MACs at batch 1 divided by the CPU's peak fp32
fused-multiply-add rate, peak = cores_used x clock x FMA units x SIMD lanes. Assumptions,
stated in the report: 2 FMA units per core; lanes from /proc/cpuinfo flags (AVX-512F: 16 fp32,
AVX2+FMA: 8, otherwise SSE: 4 with no FMA, counted as 1 unit); clock = cpufreq max if the OS
exposes it, else /proc/cpuinfo "cpu MHz" (the current clock; turbo is ignored).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

from pipeline.errors import EdgekdError

# Thread profiles standing for devices: requested threads.
PROFILES: dict[str, int] = {"tablet": 4, "big-core": 1}


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def resolve_profile(name: str) -> dict:
    """'tablet' | 'big-core' | 'N' / 'N-threads' -> {profile, threads_requested, threads, cpus, pinned}."""
    name = name.strip()
    if name in PROFILES:
        req = PROFILES[name]
    else:
        digits = name.removesuffix("-threads").removesuffix("-thread")
        if not digits.isdigit() or int(digits) < 1:
            raise EdgekdError(f"unknown bench profile {name!r}; use {', '.join(PROFILES)} or a thread count like 2-threads")
        req = int(digits)
        name = f"{req}-threads"
    avail = available_cpus()
    cpus = avail[: min(req, len(avail))]
    return {"profile": name, "threads_requested": req, "threads": len(cpus), "cpus": cpus,
            "pinned": hasattr(os, "sched_setaffinity"), "cores_available": len(avail)}


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


def _cpuinfo() -> dict:
    info: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k in ("model name", "cpu MHz", "flags") and k not in info:
            info[k] = v
    return info


def _max_freq_ghz() -> tuple[Optional[float], str]:
    p = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(p.read_text().strip()) / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    mhz = _cpuinfo().get("cpu MHz")
    if mhz:
        try:
            return float(mhz) / 1000.0, "/proc/cpuinfo cpu MHz (current clock)"
        except ValueError:
            pass
    return None, "unknown"


def simd() -> dict:
    flags = set(_cpuinfo().get("flags", "").split())
    if "avx512f" in flags:
        return {"isa": "AVX-512", "fp32_lanes": 16, "fma_units": 2}
    if "avx2" in flags and "fma" in flags:
        return {"isa": "AVX2+FMA", "fp32_lanes": 8, "fma_units": 2}
    if platform.machine() in ("arm64", "aarch64"):
        return {"isa": "NEON", "fp32_lanes": 4, "fma_units": 2}
    return {"isa": "SSE", "fp32_lanes": 4, "fma_units": 1}


def peak_gmacs(cores_used: int) -> dict:
    """Peak fp32 multiply-accumulates per second (1e9) for `cores_used` cores, with its assumptions."""
    ghz, src = _max_freq_ghz()
    s = simd()
    per_core = None if ghz is None else ghz * s["fma_units"] * s["fp32_lanes"]
    return {"cores_used": cores_used, "clock_ghz": None if ghz is None else round(ghz, 3), "clock_source": src, **s,
            "peak_gmacs_per_s": None if per_core is None else round(per_core * cores_used, 2),
            "assumption": f"peak = cores_used x clock x {s['fma_units']} FMA units x {s['fp32_lanes']} fp32 lanes "
                          f"({s['isa']}); 1 FMA = 1 MAC; clock from {src}; memory bandwidth ignored"}


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    ci = _cpuinfo()
    avail = available_cpus()
    ghz, src = _max_freq_ghz()
    return {
        "cpu": ci.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": len(avail),
        "cpus_available": avail,
        "clock_ghz": None if ghz is None else round(ghz, 3),
        "clock_source": src,
        "simd": simd()["isa"],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "runtimes": {k: _version(d) for k, d in (("onnxruntime", "onnxruntime"), ("ai_edge_litert", "ai-edge-litert"),
                                                   ("torch", "torch"), ("coremltools", "coremltools"),
                                                   ("numpy", "numpy"), ("onnx", "onnx"))},
        "affinity_supported": hasattr(os, "sched_setaffinity"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sys_platform": sys.platform,
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
