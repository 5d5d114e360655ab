"""Exit codes under torchrun (issue 13): with --nproc-per-node 2 a failed gate exits 3 with edgekd's one line,
and no torchrun ChildFailedError traceback. Seen failing before the fix: stderr ended with torchrun's
`torch.distributed.elastic.multiprocessing.errors.ChildFailedError` traceback."""

import os
import subprocess
import sys

import pytest

from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def test_two_process_gate_failure_is_exit_3_one_line(tiny_folder, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgekd", "run", "--data", str(tiny_folder), "--out", str(out)]
    cmd += ["--stages", "data,teacher,soft_labels,student,baseline,evaluate", "--nproc-per-node", "2"]
    for o in TINY_OVERRIDES + ["gate.max_accuracy_drop=100", "gate.min_kd_gain=100"]:  # unreachable
        cmd += ["--set", o]
    env = {**os.environ, "EDGEKD_QUIET": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgekd:")]
    assert len(lines) == 1 and lines[0].startswith("edgekd: gate failed"), r.stderr[-3000:]
    assert not (out / ".edgekd.lock").exists()
