"""THE description of the machine a run, an export study or a benchmark ran on.

`describe()` is what report.json records (`machine` from the evaluate stage, the base of
`bench_machine` from the bench stage) and what the int8 latency study prints. It reads
/proc/cpuinfo and cpufreq where the OS has them and asks package metadata for versions, so it
imports no runtime (the benchmark worker's peak RSS stays the runtime's own); torch is imported
only if it is installed, for its version and the GPU name.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

# CPU flags that decide which kernels the runtimes pick: x86 SIMD width and int8 dot products, ARM
# NEON (asimd) and its int8 dot-product / matmul extensions.
FLAGS_THAT_MATTER = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)
# Runtimes an artifact is measured with (report key -> distribution name).
RUNTIME_DISTS = (
    ("onnxruntime", "onnxruntime"),
    ("ai_edge_litert", "ai-edge-litert"),
    ("torch", "torch"),
    ("coremltools", "coremltools"),
    ("numpy", "numpy"),
    ("onnx", "onnx"),
)
# Converters an artifact is made with.
CONVERTER_DISTS = (("tensorflow", "tensorflow"), ("onnx2tf", "onnx2tf"), ("onnxscript", "onnxscript"))
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz


def available_cpus() -> list[int]:
    """CPU ids this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_cpuinfo(text: str) -> dict:
    """First 'model name', 'cpu MHz' and 'flags' (x86) / 'Features' (ARM, stored as 'flags') of /proc/cpuinfo text."""
    info: dict = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "Features":
            k = "flags"
        if k in ("model name", "cpu MHz", "flags") and k not in info:
            info[k] = v
    return info


def cpuinfo() -> dict:
    """parse_cpuinfo of this machine's /proc/cpuinfo; {} where there is none."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


def cpu_flags() -> list[str]:
    """The FLAGS_THAT_MATTER this CPU has, in that order."""
    have = set(cpuinfo().get("flags", "").split())
    return [f for f in FLAGS_THAT_MATTER if f in have]


def max_freq_ghz() -> tuple[Optional[float], str]:
    """(clock in GHz, where it was read): cpufreq max if the OS exposes it, else the current clock."""
    try:
        return int(CPUFREQ_MAX.read_text().strip()) / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    mhz = cpuinfo().get("cpu MHz")
    if mhz:
        try:
            return float(mhz) / 1000.0, "/proc/cpuinfo cpu MHz (current clock)"
        except ValueError:
            pass
    return None, "unknown"


def simd() -> dict:
    """Widest fp32 SIMD: {isa, fp32_lanes, fma_units} (2 FMA units assumed where there is FMA)."""
    flags = set(cpuinfo().get("flags", "").split())
    if "avx512f" in flags:
        return {"isa": "AVX-512", "fp32_lanes": 16, "fma_units": 2}
    if "avx2" in flags and "fma" in flags:
        return {"isa": "AVX2+FMA", "fp32_lanes": 8, "fma_units": 2}
    if platform.machine() in ("arm64", "aarch64"):
        return {"isa": "NEON", "fp32_lanes": 4, "fma_units": 2}
    return {"isa": "SSE", "fp32_lanes": 4, "fma_units": 1}


def version(dist: str) -> Optional[str]:
    """Installed version of a distribution, None if it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch() -> tuple[Optional[str], Optional[str]]:
    """(torch.__version__, name of GPU 0 or None); (None, None) without torch."""
    try:
        import torch
    except ImportError:
        return None, None
    return torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe() -> dict:
    """The machine: CPU, cores, clock, SIMD and flags, platform, Python, torch and GPU, runtime versions, date."""
    ci = cpuinfo()
    avail = available_cpus()
    ghz, src = max_freq_ghz()
    torch_version, gpu = _torch()
    return {
        "cpu": ci.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": len(avail),
        "cpus_available": avail,
        "clock_ghz": None if ghz is None else round(ghz, 3),
        "clock_source": src,
        "simd": simd()["isa"],
        "cpu_flags": cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version,
        "gpu": gpu,
        "runtimes": {k: version(d) for k, d in RUNTIME_DISTS},
        "converters": {k: version(d) for k, d in CONVERTER_DISTS},
        "affinity_supported": hasattr(os, "sched_setaffinity"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sys_platform": sys.platform,
    }


def summary(d: Optional[dict] = None) -> str:
    """One line for a results file: CPU, cores, SIMD flags, platform, Python, runtime and converter versions."""
    d = describe() if d is None else d
    versions = {**d.get("runtimes", {}), **d.get("converters", {})}
    return (
        f"{d['cpu']} ({d['cores']} cores; SIMD: {' '.join(d.get('cpu_flags') or []) or '?'}), {d['platform']}, "
        f"Python {d['python']}" + "".join(f", {k} {v}" for k, v in versions.items() if v)
    )
