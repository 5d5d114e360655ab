"""The run directory: the only state shared between stages.

Layout (every file written atomically: temp file in the same folder + os.replace):
    config.yaml                resolved config of the last invocation
    stages.json                {stage: {fingerprint, seconds, finished_at}}
    data/split.json            classes, items (key, path, label, split, sha256)
    data/report.json           data validation report (skips, counts, imbalance, leakage)
    teacher/model.safetensors  teacher weights for these classes (+ teacher/meta.json)
    soft_labels/<fp>/chunk-*.safetensors   teacher logits over the training set (and views)
    student/, baseline/        checkpoint.pt (resume state), model.safetensors, history.json (seed 0)
    student/auto/<candidate>/  kd.alpha/temperature=auto: one short run per candidate, result.json
    seeds/<i>/student|baseline the same for train.seeds > 1
    eval/metrics.json          test-split metrics of teacher, student, baseline
    exports/manifest.json      export artifacts (see export/)
    report.json, report.md     what a program and a person read
    .edgekd.lock               held while an edgekd process writes here (pid, host, command)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import yaml

from edgekd.pipeline.errors import CorruptFile, EdgekdError, RunDirBusy


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
    """A JSON file edgekd wrote. CorruptFile (one line naming the file and the fix) when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptFile(
            f"{path} is corrupt (not valid JSON: {msg}); delete it and rerun the stage that writes it "
            "(or `edgekd run` with the same --out)"
        ) from None


def read_json_object(path: Path) -> dict:
    """read_json for files that must hold a JSON object (stages.json, meta.json, ...)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CorruptFile(f"{path} is corrupt (a JSON {type(obj).__name__}, not an object); delete it and rerun")
    return obj


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


def code_fingerprint(*modules: Any) -> str:
    """Short hash of the source files of `modules` (module objects): a stage's "code version", so an edited
    converter or metric redoes the stage even when the package version stayed the same."""
    from edgekd.pipeline import __version__

    h = hashlib.sha256(__version__.encode())
    for m in modules:
        f = getattr(m, "__file__", None)
        if f and Path(f).is_file():
            h.update(Path(f).name.encode() + b"\0" + Path(f).read_bytes())
    return h.hexdigest()[:16]


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
        from pydantic import ValidationError

        from edgekd.pipeline.config import Config, _explain

        if self.root.exists() and not self.root.is_dir():
            raise EdgekdError(f"{self.root} is a file, not a run directory; pass the folder `edgekd run --out` made")
        p = self.path("config.yaml")
        if not p.exists():
            raise EdgekdError(
                f"{self.root} is not an edgekd run directory (no config.yaml); create it with `edgekd run`"
            )
        fix = f"fix it by hand, or rerun `edgekd run --out {self.root}` with your --config/--set to rewrite it"
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise CorruptFile(f"{p} is not UTF-8 text; {fix}") from None
        except yaml.YAMLError as e:
            raise CorruptFile(f"{p} is not valid YAML ({str(e).splitlines()[0]}); {fix}") from None
        if not isinstance(raw, dict):
            raise CorruptFile(f"{p} does not hold a mapping of config sections; {fix}")
        try:
            return Config.model_validate(raw)
        except ValidationError as e:
            raise CorruptFile(f"{p}: {_explain(e)}; {fix}") from None

    def save_config(self, cfg) -> None:
        atomic_write_bytes(
            self.path("config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode()
        )

    def stages(self) -> dict:
        p = self.path("stages.json")
        return read_json_object(p) if p.exists() else {}

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

    # lock ---------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path(LOCK_NAME)

    @contextmanager
    def locked(self, command: str = "edgekd") -> Iterator[None]:
        """Hold RUN_DIR/.edgekd.lock while writing: a second edgekd process on the same run directory gets
        RunDirBusy (exit 2) instead of interleaving its writes. A lock whose process is gone (same host) is
        stale and taken over. Processes started by a holder (torchrun ranks: EDGEKD_LOCK_HELD) do not lock."""
        held = os.environ.get(LOCK_ENV)
        if (held and Path(held).resolve() == self.lock_path.resolve()) or os.environ.get("RANK", "0") != "0":
            yield  # a rank of a run whose launcher (or rank 0) holds the lock
            return
        self.root.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.lock_path)
                if holder is None and _age(self.lock_path) < 10:  # being written by the process that made it
                    holder = {"pid": "?", "host": socket.gethostname(), "command": "starting"}
                if holder is not None and (holder["pid"] == "?" or _alive(holder)):
                    raise RunDirBusy(
                        f"another edgekd process (pid {holder.get('pid')} on {holder.get('host')}: "
                        f"{holder.get('command', '?')}) is writing {self.root}; wait for it to finish, or delete "
                        f"{self.lock_path} if that process is gone"
                    ) from None
                self.lock_path.unlink(missing_ok=True)  # stale: its process is gone (or the file is unreadable)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        else:
            raise RunDirBusy(f"could not take the lock {self.lock_path}; delete it if no edgekd process is running")
        old = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = str(self.lock_path.resolve())
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = old
            holder = _lock_holder(self.lock_path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.lock_path.unlink(missing_ok=True)


LOCK_NAME = ".edgekd.lock"
LOCK_ENV = "EDGEKD_LOCK_HELD"


def _lock_holder(path: Path) -> Optional[dict]:
    try:
        obj = json.loads(path.read_text())
        return obj if isinstance(obj, dict) and isinstance(obj.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 1e9


def _alive(holder: dict) -> bool:
    """Is the lock holder still running? Another host's process cannot be checked: assume it is."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):  # a zombie (exited, not yet reaped) holds nothing
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    return True
