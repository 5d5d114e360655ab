"""THE machine description: the keys every report reads, the CPU flags parsed, no runtime imported."""

import subprocess
import sys

from edgekd.pipeline import machine

# report.json `machine` (evaluate stage) and `bench_machine` (bench stage) before they shared describe().
MACHINE_KEYS = {"cpu", "cores", "python", "torch", "platform", "gpu"}
BENCH_MACHINE_KEYS = {
    "cpu",
    "cores",
    "cores_available",
    "cpus_available",
    "clock_ghz",
    "clock_source",
    "simd",
    "platform",
    "python",
    "runtimes",
    "affinity_supported",
    "date",
    "sys_platform",
}

X86 = """processor	: 0
model name	: Test Xeon
cpu MHz		: 2400.000
flags		: fpu sse2 avx2 fma avx512f avx512_vnni
processor	: 1
model name	: Other
flags		: fpu
"""
ARM = """processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd asimddp i8mm
"""


def test_describe_keeps_every_report_key():
    d = machine.describe()
    assert MACHINE_KEYS | BENCH_MACHINE_KEYS <= set(d)
    assert d["cores_available"] >= 1 and d["cpus_available"] == machine.available_cpus()
    assert "onnxruntime" in d["runtimes"] and "ai_edge_litert" in d["runtimes"] and "tensorflow" in d["converters"]
    import torch

    assert d["torch"] == torch.__version__
    assert d["cpu_flags"] == [f for f in machine.FLAGS_THAT_MATTER if f in d["cpu_flags"]]


def test_cpuinfo_first_processor_and_arm_features():
    x = machine.parse_cpuinfo(X86)
    assert x == {"model name": "Test Xeon", "cpu MHz": "2400.000", "flags": "fpu sse2 avx2 fma avx512f avx512_vnni"}
    assert machine.parse_cpuinfo(ARM) == {"flags": "fp asimd asimddp i8mm"}


def test_flags_simd_and_clock_from_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "cpuinfo", lambda: machine.parse_cpuinfo(X86))
    assert machine.cpu_flags() == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert machine.simd() == {"isa": "AVX-512", "fp32_lanes": 16, "fma_units": 2}
    monkeypatch.setattr(machine, "cpuinfo", lambda: machine.parse_cpuinfo(ARM))
    assert machine.cpu_flags() == ["asimd", "asimddp", "i8mm"]
    monkeypatch.setattr(machine, "cpuinfo", lambda: {"cpu MHz": "1800.0"})
    monkeypatch.setattr(machine, "CPUFREQ_MAX", tmp_path / "missing")
    assert machine.max_freq_ghz() == (1.8, "/proc/cpuinfo cpu MHz (current clock)")
    (tmp_path / "max").write_text("3500000\n")
    monkeypatch.setattr(machine, "CPUFREQ_MAX", tmp_path / "max")
    assert machine.max_freq_ghz() == (3.5, "cpufreq cpuinfo_max_freq")


def test_summary_names_cpu_flags_and_versions():
    d = {
        "cpu": "Test Xeon",
        "cores": 4,
        "cpu_flags": ["avx2", "fma"],
        "platform": "Linux-x",
        "python": "3.11.9",
        "runtimes": {"ai_edge_litert": "1.2.0", "coremltools": None},
        "converters": {"tensorflow": "2.19.0"},
    }
    assert machine.summary(d) == (
        "Test Xeon (4 cores; SIMD: avx2 fma), Linux-x, Python 3.11.9, ai_edge_litert 1.2.0, tensorflow 2.19.0"
    )


def test_import_loads_no_runtime():
    # The benchmark worker's peak RSS must be the runtime's: the machine module imports none.
    heavy = ("torch", "numpy", "onnxruntime", "ai_edge_litert", "tensorflow")
    code = f"import sys, edgekd.pipeline.machine; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
