"""edgekd: distil a large vision classifier into a MobileNetV3 student and ship it to offline devices.

Packages, bottom to top (each imports only those below it; `lint-imports` checks it):
    edgekd.pipeline     the distillation library: config, data, models, losses, training, evaluation, run directory
    edgekd.export       ONNX / TFLite / CoreML artifacts, their runtimes, metadata and parity checks
    edgekd.benchmarks   on-device-style measurements, goals, the run report
    edgekd.android      installs an exported model into the Android demo app (android_demo/)
    edgekd.cli          the `edgekd` command and the stage table (edgekd.stages)
"""

from edgekd.pipeline import __version__

__all__ = ["__version__"]
