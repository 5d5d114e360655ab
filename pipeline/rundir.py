"""The run directory: the only state shared between stages.

Layout (every file written atomically: temp file in the same folder + os.replace):
    config.yaml                resolved config of the last invocation
    stages.json                {stage: {fingerprint, seconds, finished_at}}
    data/split.json            classes, items (key, path, label, split, sha256)
    data/report.json           data validation report (skips, counts, imbalance, leakage)
    teacher/model.safetensors  teacher weights for these classes (+ teacher/meta.json)
    soft_labels/<fp>/shard-*.safetensors   teacher logits over the training set
    student/, baseline/        checkpoint.pt (resume state), model.safetensors, history.json (seed 0)
    student/auto/<candidate>/  kd.alpha/temperature=auto: one short run per candidate, result.json
    seeds/<i>/student|baseline the same for train.seeds > 1
    eval/metrics.json          test-split metrics of teacher, student, baseline
    exports/manifest.json      export artifacts (see export/)
    report.json, report.md     what a program and a person read
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import yaml

from edgekd.pipeline.errors import EdgekdError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed over `path`, on error removed.

    For writers that insist on a file name (torch.save, safetensors, converters)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (config sections, upstream fingerprints, file hashes)."""
    blob = json.dumps(parts, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def split_json(self) -> Path:
        return self.path("data", "split.json")

    @property
    def data_report(self) -> Path:
        return self.path("data", "report.json")

    @property
    def teacher_weights(self) -> Path:
        return self.path("teacher", "model.safetensors")

    @property
    def teacher_meta(self) -> Path:
        return self.path("teacher", "meta.json")

    def student_dir(self, kind: str) -> Path:
        return self.path(kind)

    @property
    def metrics(self) -> Path:
        return self.path("eval", "metrics.json")

    @property
    def report_json(self) -> Path:
        return self.path("report.json")

    # state -------------------------------------------------------------------------------
    def require(self, what: Path, hint: str) -> Path:
        if not what.exists():
            raise EdgekdError(f"{what} is missing: {hint}")
        return what

    def config(self):
        from edgekd.pipeline.config import Config

        p = self.path("config.yaml")
        if not p.exists():
            raise EdgekdError(
                f"{self.root} is not an edgekd run directory (no config.yaml); create it with `edgekd run`"
            )
        return Config.model_validate(yaml.safe_load(p.read_text()))

    def save_config(self, cfg) -> None:
        atomic_write_bytes(
            self.path("config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode()
        )

    def stages(self) -> dict:
        p = self.path("stages.json")
        return read_json(p) if p.exists() else {}

    def stage_done(self, name: str, fp: str) -> bool:
        return self.stages().get(name, {}).get("fingerprint") == fp

    def mark_stage(self, name: str, fp: str, seconds: float, **extra: Any) -> None:
        st = self.stages()
        st[name] = {
            "fingerprint": fp,
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        atomic_write_json(self.path("stages.json"), st)

    def stage_fingerprint(self, name: str) -> Optional[str]:
        return self.stages().get(name, {}).get("fingerprint")
