"""`edgekd run` killed during distillation (SIGTERM: a clean exit 130; SIGKILL: no chance to clean up), then
rerun with --resume, ends with the same student as an uninterrupted run (issue 13: --resume tested through the
CLI, not only below it). CPU, tiny data; the teacher and soft labels come from the shared tiny run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.pipeline.rundir import sha256_file
from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow
EPOCHS = 8


def _cmd(out: Path, *extra: str) -> list[str]:
    a = [sys.executable, "-m", "edgekd", "run", "--out", str(out), "--stages", "student"]
    for o in TINY_OVERRIDES + ["gate.max_accuracy_drop=100", f"train.epochs={EPOCHS}", "kd.alpha=0.9"]:
        a += ["--set", o]
    return a + list(extra)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "EDGEKD_QUIET": "1"}


def _killed(out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start `edgekd run`, wait for the student's first epoch checkpoint, send `sig`."""
    p = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = out / "student" / "checkpoint.pt"
    t0 = time.time()
    while not ck.exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(sig)
    so, se = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, so, se)


def _history(out: Path) -> list:
    return json.loads((out / "student" / "history.json").read_text())["history"]


def _fresh_copy(tiny_run: Path, out: Path) -> Path:
    """The tiny run with its teacher and soft labels, without a student (it is trained here)."""
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("student"))
    return out


@pytest.fixture(scope="module")
def uninterrupted(tiny_run, tmp_path_factory) -> Path:
    out = _fresh_copy(tiny_run, tmp_path_factory.mktemp("uninterrupted") / "run")
    r = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_the_uninterrupted_result(sig, tiny_run, uninterrupted, tmp_path):
    out = _fresh_copy(tiny_run, tmp_path / "run")
    k = _killed(out, sig)
    if sig == signal.SIGTERM:  # edgekd's own clean end: exit 130, one line, no traceback
        assert k.returncode == 130, k.stderr[-2000:]
        assert "rerun the same command with --resume" in k.stderr and "Traceback" not in k.stderr
    else:
        assert k.returncode == -signal.SIGKILL
    assert (out / "student" / "checkpoint.pt").exists() and not (out / "student" / "model.safetensors").exists()
    lock = out / ".edgekd.lock"
    assert sig == signal.SIGKILL or not lock.exists()  # SIGKILL leaves a stale lock: the rerun takes it over
    r = subprocess.run(_cmd(out, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = out / "student" / "model.safetensors", uninterrupted / "student" / "model.safetensors"
    assert sha256_file(a) == sha256_file(b)
    ha, hb = _history(out), _history(uninterrupted)
    assert len(ha) == len(hb) == EPOCHS
    keys = ("epoch", "train_loss", "val_accuracy")
    assert [{k: h.get(k) for k in keys} for h in ha] == [{k: h.get(k) for k in keys} for h in hb]
    assert not lock.exists()
