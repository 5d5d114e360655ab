"""The Python API: the same engine as the `edgekd` command, for notebooks and scripts.

    import edgekd

    run = edgekd.distill(data="elpv", preset="quick", out="runs/x", overrides={"train": {"epochs": 2}})
    run.report.student.accuracy, run.report.kd.conclusion, run.report.student.per_class_recall
    run.export(formats=["onnx", "tflite-int8"])        # -> list[Artifact] (parity, size, sha256)
    run.bench()                                        # -> Report with latencies
    edgekd.Run.open("runs/x").report                   # typed view of RUN_DIR/report.json

`distill` resolves the config like `edgekd run` (defaults < preset < config file < overrides) and runs the
stages through edgekd.stage_table, as the command does; `Run.export` / `Run.bench` are `edgekd export` /
`edgekd bench`. Errors are exceptions, never SystemExit: `EdgekdError` for bad input, config or environment
(the CLI's exit 2), its subclass `GateFailed` when a quality gate failed (exit 3; every result is still
written, and `error.run` is the Run so the report can be read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from edgekd.pipeline.config import nested_overrides
from edgekd.pipeline.errors import EdgekdError, GateFailed

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as edgekd.cli: before torch loads OpenMP

__all__ = ["distill", "Run", "Report", "ModelMetrics", "KDVerdict", "Artifact", "Gate", "EdgekdError", "GateFailed"]

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------
# typed results (read from report.json and the exports manifest)


@dataclass(frozen=True)
class ModelMetrics:
    """A model on the test split (PyTorch): accuracy and macro-F1 (mean over seeds for student/baseline),
    per-class recall (seed 0: the shipped model), confusion matrix, calibration error."""

    name: str
    arch: Optional[str]
    accuracy: float
    macro_f1: float
    per_class_recall: dict[str, float]
    params: Optional[int] = None
    accuracy_std: Optional[float] = None
    ece: Optional[float] = None
    agreement_teacher: Optional[float] = None
    confusion_matrix: Optional[list[list[int]]] = None
    seeds: int = 1

    @classmethod
    def from_json(cls, name: str, d: dict) -> ModelMetrics:
        return cls(
            name=name,
            arch=d.get("arch"),
            accuracy=float(d["accuracy"]),
            macro_f1=float(d.get("macro_f1") or 0.0),
            per_class_recall={k: float(v) for k, v in (d.get("per_class_recall") or {}).items()},
            params=d.get("params"),
            accuracy_std=d.get("accuracy_std"),
            ece=d.get("ece"),
            agreement_teacher=d.get("agreement_teacher"),
            confusion_matrix=d.get("confusion_matrix"),
            seeds=int(d.get("seeds") or 1),
        )


@dataclass(frozen=True)
class KDVerdict:
    """Did distillation help: KD gain (student − baseline accuracy, points), its paired-bootstrap 95% interval
    over the test images, McNemar's p (seed 0) and the conclusion in words."""

    gain_points: float
    ci95: tuple[float, float]
    mcnemar_p: float
    seeds: int
    test_images: int
    conclusion: str

    @classmethod
    def from_json(cls, d: dict) -> KDVerdict:
        lo, hi = d["kd_gain_ci95"]
        return cls(
            gain_points=float(d["kd_gain_mean"]),
            ci95=(float(lo), float(hi)),
            mcnemar_p=float(d["mcnemar_p"]),
            seeds=int(d.get("seeds") or 1),
            test_images=int(d.get("test_images") or 0),
            conclusion=str(d.get("conclusion")),
        )


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class Artifact:
    """An exported file: its manifest entry, parity with the float student (in its own runtime, on the test
    split), per-class recall, and its latency per thread profile (ms, p50) once benchmarked."""

    name: str
    format: str
    precision: str
    status: str
    path: Optional[Path]
    sha256: Optional[str]
    size_bytes: Optional[int]
    reason: Optional[str] = None
    parity_status: Optional[str] = None
    agreement: Optional[float] = None
    accuracy: Optional[float] = None
    accuracy_drop_points: Optional[float] = None
    max_abs: Optional[float] = None
    per_class_recall: dict[str, Optional[float]] = field(default_factory=dict)
    latency_p50_ms: dict[str, float] = field(default_factory=dict)  # profile -> ms
    int8_method: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Report:
    """RUN_DIR/report.json (+ exports manifest), typed. `raw` is the whole report.json."""

    run_dir: Path
    classes: list[str]
    teacher: Optional[ModelMetrics]
    student: Optional[ModelMetrics]
    baseline: Optional[ModelMetrics]
    kd: Optional[KDVerdict]
    gates: list[Gate]
    artifacts: list[Artifact]
    headline: Optional[str]
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every recorded gate passed (distillation gates and the artifacts' parity gates)."""
        return all(g.passed for g in self.gates) and not any(a.status == "failed" for a in self.artifacts)

    def artifact(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise EdgekdError(
            f"no artifact {name!r} in {self.run_dir}; artifacts: {', '.join(a.name for a in self.artifacts)}"
        )


def _artifacts(root: Path, rep: dict) -> list[Artifact]:
    from edgekd.export.manifest import manifest_path, read_manifest

    if not manifest_path(root).exists():
        return []
    manifest = read_manifest(root)
    labels = manifest.get("labels") or []
    latency: dict[str, dict[str, float]] = {}
    for e in rep.get("artifacts") or []:
        p50 = (e.get("latency_ms") or {}).get("p50")
        if p50 is not None:
            latency.setdefault(e.get("name"), {})[str(e.get("profile"))] = float(p50)
    methods = {r.get("name"): r.get("int8_method") for r in (rep.get("exports") or {}).get("artifacts") or []}
    out = []
    for a in manifest["artifacts"]:
        p = a.get("parity") or {}
        rec = p.get("per_class_recall") or []
        out.append(
            Artifact(
                name=a.get("name"),
                format=a.get("format"),
                precision=a.get("precision"),
                status=a.get("status"),
                path=root / a["path"] if a.get("path") else None,
                sha256=a.get("sha256"),
                size_bytes=a.get("size_bytes"),
                reason=a.get("reason"),
                parity_status=p.get("status"),
                agreement=p.get("agreement"),
                accuracy=p.get("accuracy"),
                accuracy_drop_points=p.get("accuracy_drop_points"),
                max_abs=p.get("max_abs"),
                per_class_recall=dict(zip(labels, rec)) if len(rec) == len(labels) else {},
                latency_p50_ms=latency.get(a.get("name"), {}),
                int8_method=methods.get(a.get("name")),
            )
        )
    return out


def read_report(run_dir: PathLike) -> Report:
    from edgekd.pipeline.report import load_report
    from edgekd.pipeline.rundir import RunDir

    run = RunDir(run_dir)
    rep = load_report(run)
    models = {k: ModelMetrics.from_json(k, rep[k]) if rep.get(k) else None for k in ("teacher", "student", "baseline")}
    classes = (rep.get("data") or {}).get("classes") or list((rep.get("teacher") or {}).get("per_class_recall") or {})
    return Report(
        run_dir=run.root,
        classes=list(classes),
        teacher=models["teacher"],
        student=models["student"],
        baseline=models["baseline"],
        kd=KDVerdict.from_json(rep["kd_verdict"]) if rep.get("kd_verdict") else None,
        gates=[Gate(str(g.get("name")), bool(g.get("passed")), str(g.get("message"))) for g in rep.get("gates") or []],
        artifacts=_artifacts(run.root, rep),
        headline=rep.get("headline"),
        raw=rep,
    )


# ----------------------------------------------------------------------------------------------
# the run


def _nested(overrides: Optional[dict]) -> dict:
    return nested_overrides(overrides)


class Run:
    """A run directory: `report` (typed, read fresh each time), `export()`, `bench()`, `config`."""

    def __init__(self, root: PathLike) -> None:
        from edgekd.pipeline.rundir import RunDir

        self._run = RunDir(Path(root))

    @classmethod
    def open(cls, path: PathLike) -> Run:
        """An existing run directory (made by `edgekd run` or edgekd.distill); EdgekdError if it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise EdgekdError(f"run directory not found: {run.path}; create it with edgekd.distill(out=...)")
        run.config  # noqa: B018  (raises EdgekdError when there is no config.yaml)
        return run

    @property
    def path(self) -> Path:
        return self._run.root

    @property
    def config(self):
        """The run's resolved config (edgekd.pipeline.config.Config)."""
        return self._run.config()

    @property
    def report(self) -> Report:
        return read_report(self.path)

    def __repr__(self) -> str:
        return f"edgekd.Run({str(self.path)!r})"

    def _cfg(self, overrides: Optional[dict]):
        from edgekd.pipeline.config import with_overrides

        return with_overrides(self._run.config(), _nested(overrides)) if overrides else self._run.config()

    def export(self, formats: Optional[list[str]] = None, overrides: Optional[dict] = None) -> list[Artifact]:
        """`edgekd export RUN_DIR [--formats ...] [--set ...]`: convert the distilled student, check each file's
        parity (and per-class recall) against it; returns the artifacts of the manifest. GateFailed (with
        `.run`) when an artifact missed its gate; the manifest is written either way."""
        from edgekd.export.formats import check_gate_keys, resolve_formats
        from edgekd.stage_table import export_stage

        cfg = self._cfg(overrides)
        resolve_formats(cfg.export.formats)
        check_gate_keys(cfg.export.gates)
        with self._run.locked("edgekd.Run.export"):
            if overrides:
                self._run.save_config(cfg)
            self._call(lambda: export_stage(cfg, self._run, list(formats) if formats is not None else None))
        return self.report.artifacts

    def bench(self, overrides: Optional[dict] = None) -> Report:
        """`edgekd bench RUN_DIR [--set bench.KEY=...]`: measure every artifact, the teacher and the PyTorch
        student; returns the report (latencies in `Artifact.latency_p50_ms`, the rest in `raw`)."""
        from edgekd.benchmarks.machine import parse_profiles
        from edgekd.stage_table import bench_stage

        cfg = self._cfg(overrides)
        parse_profiles(cfg.bench.profiles)
        with self._run.locked("edgekd.Run.bench"):
            self._run.save_config(cfg)
            self._call(lambda: bench_stage(cfg, self._run))
        return self.report

    def _call(self, fn) -> Any:
        try:
            return fn()
        except GateFailed as e:
            e.run = self  # type: ignore[attr-defined]  # the results are on disk: let the caller read them
            raise
        except SystemExit as e:  # never let a library exit end the caller's interpreter
            raise EdgekdError(f"edgekd stopped with exit status {e.code}") from None


def distill(
    data: Optional[PathLike] = None,
    preset: Optional[str] = None,
    out: Optional[PathLike] = None,
    overrides: Optional[dict] = None,
    config: Optional[PathLike] = None,
    seeds: Optional[int] = None,
    stages: Optional[list[str]] = None,
    resume: bool = False,
) -> Run:
    """`edgekd run`: distil a student from the teacher on `data` ('elpv' or an ImageFolder) and, by default,
    export and benchmark it, into `out` (default runs/<name>-<preset>).

    overrides: nested ({'train': {'epochs': 2}}) or dotted ({'train.epochs': 2}) config keys, as --set.
    stages: a subset of the stages (default: all the config lists). Returns the Run; raises EdgekdError on
    bad input and GateFailed (with `.run`) when a quality gate failed after every result was written."""
    from edgekd.pipeline.rundir import RunDir
    from edgekd.stage_table import run_config, run_stages

    cfg = run_config(
        str(config) if config is not None else None,
        preset,
        _nested(overrides),
        data=str(data) if data is not None else None,
        seeds=seeds,
        stages=list(stages) if stages is not None else None,
    )
    root = Path(out) if out is not None else Path("runs") / f"{cfg.name}-{cfg.preset}"
    if root.exists() and not root.is_dir():
        raise EdgekdError(f"out={str(root)!r} is a file; give a folder (new or an earlier run directory)")
    run = Run(root)
    rd = RunDir(root)
    root.mkdir(parents=True, exist_ok=True)
    with rd.locked("edgekd.distill"):
        rd.save_config(cfg)
        run._call(lambda: run_stages(cfg, rd, cfg.stages, resume))
    return run
