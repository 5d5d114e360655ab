"""The run-directory lock (issue 13, nothing lost): a second writer is refused with a clear line, a lock
whose process is gone is taken over, and the lock is released when the holder ends."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from edgekd.pipeline.errors import RunDirBusy
from edgekd.pipeline.rundir import LOCK_ENV, RunDir


def test_second_writer_refused_stale_lock_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_ENV, raising=False)
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.root.mkdir()
        info = {"pid": holder.pid, "host": socket.gethostname(), "command": "edgekd run X", "since": time.time()}
        run.lock_path.write_text(json.dumps(info))
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid} .*edgekd run X"):
            with run.locked("edgekd evaluate"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over, then released
    with run.locked("edgekd evaluate"):
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
        # nested use in the same process (a stage command inside `edgekd run`) does not deadlock
        with RunDir(run.root).locked("inner"):
            pass
        assert run.lock_path.exists()
    assert not run.lock_path.exists()


def test_two_processes_do_not_interleave(tmp_path, monkeypatch):
    """A real second process holding the lock makes the first one's `locked` fail, not wait or interleave."""
    monkeypatch.delenv(LOCK_ENV, raising=False)
    run = RunDir(tmp_path / "run")
    code = (
        "import sys, time; from edgekd.pipeline.rundir import RunDir\n"
        f"with RunDir({str(run.root)!r}).locked('other'):\n"
        "    print('locked', flush=True); time.sleep(30)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match="another edgekd process"):
            with run.locked("me"):
                pass
    finally:
        p.kill()
        p.wait()
