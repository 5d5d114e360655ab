"""edgekd: distil a large vision classifier into a MobileNetV3 student and ship it to offline devices.

Packages, bottom to top (each imports only those below it; `lint-imports` checks it):
    edgekd.pipeline     the distillation library: config, data, models, losses, training, evaluation, run directory
    edgekd.export       ONNX / TFLite / CoreML artifacts, their runtimes, metadata and parity checks
    edgekd.benchmarks   on-device-style measurements, goals, the run report, the model card
    edgekd.android      installs an exported model into the Android demo app (android_demo/)
    edgekd.stage_table  the stages of a run, in order
    edgekd.cli          the `edgekd` command;  edgekd.api  the Python API (below, lazily)

The Python API (edgekd/api.py) is loaded on first use, so `import edgekd.pipeline` stays light:

    import edgekd
    run = edgekd.distill(data="elpv", preset="quick", out="runs/x")
    run.report.student.accuracy
"""

from edgekd.pipeline import __version__

_API = ("distill", "Run", "Report", "ModelMetrics", "KDVerdict", "Artifact", "Gate")
_ERRORS = ("EdgekdError", "GateFailed")
__all__ = ["__version__", *_API, *_ERRORS]


def __getattr__(name: str):
    if name in _ERRORS:
        from edgekd.pipeline import errors

        return getattr(errors, name)
    if name in _API:
        from edgekd import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
