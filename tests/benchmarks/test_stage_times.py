"""benchmarks/stage_times.py: rows are the runs' own stage seconds and test results, grouped by label."""

from __future__ import annotations

import json
import shutil

import numpy as np

from edgekd.benchmarks import stage_times


def test_rows_means_and_logit_differences(tiny_run, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_run, b)
    st = json.loads((b / "stages.json").read_text())
    st["teacher"]["seconds"] += 10.0  # the second "old" run's teacher took 10 s longer
    (b / "stages.json").write_text(json.dumps(st))
    c = tmp_path / "c"
    shutil.copytree(tiny_run, c)
    with np.load(c / "eval" / "logits.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["student"] = arrays["student"] + 0.5  # another version of the code: other outputs
    np.savez(c / "eval" / "logits.npz", **arrays)
    out = tmp_path / "ab"
    args = ["--collect", f"old1={tiny_run}", "--collect", f"old2={b}", "--collect", f"new1={c}"]
    assert stage_times.main([*args, "--label", "old=before", "--out", str(out)]) == 0
    doc = json.loads((tmp_path / "ab.json").read_text())
    first, second, third = doc["rows"]
    want = {k: round(v["seconds"], 1) for k, v in json.loads((tiny_run / "stages.json").read_text()).items()}
    assert first["stage_seconds"] == want and first["label"] == "old" and third["label"] == "new"
    assert doc["means"]["old"]["teacher"] == round(want["teacher"] + 5.0, 1)
    assert doc["means"]["new"]["total"] == third["total_seconds"]
    assert "max_abs_logit_diff_vs_first" not in first
    assert max(second["max_abs_logit_diff_vs_first"].values()) == 0.0
    assert abs(third["max_abs_logit_diff_vs_first"]["student"] - 0.5) < 1e-6
    md = (tmp_path / "ab.md").read_text()
    assert "| old2 |" in md and "- old: before" in md


def test_a_folder_that_is_not_a_finished_run_is_one_line_exit_2(tmp_path, capsys):
    import pytest

    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(SystemExit) as e:
        stage_times.main(["--collect", f"a={tmp_path / 'not-a-run'}", "--out", str(tmp_path / "ab")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages.json is missing" in err
    assert not list(tmp_path.glob("ab.*"))  # nothing written
