"""Every bad input we know of, driven through the CLI: exit 2, one line naming the problem and the fix, no
traceback, and nothing lost. The table of inputs and answers is tests/bad_inputs.md; each row there has a case
here (same id). Run in-process (`edgekd.cli.main`): an exception escaping main() fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.cli import main
from tests.conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def _tiny_args(data, out, *sets):
    a = ["run", "--data", str(data), "--out", str(out), "--stages", "data,teacher"]
    for o in TINY_OVERRIDES + list(sets):
        a += ["--set", o]
    return a


def _copy(run: Path, tmp: Path) -> Path:
    dst = tmp / "run"
    shutil.copytree(run, dst)
    return dst


# id -> setup(tmp, tiny_folder, tiny_run) returning (argv, words the one line must contain)
def _config_missing(tmp, data, run):
    return ["run", "--config", str(tmp / "nope.yaml"), "--data", str(data)], ["config file not found"]


def _config_not_utf8(tmp, data, run):
    p = tmp / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    return ["run", "--config", str(p), "--data", str(data), "--out", str(tmp / "o")], ["not UTF-8", "save it as UTF-8"]


def _config_bad_yaml(tmp, data, run):
    p = tmp / "bad.yaml"
    p.write_text("train: [1, 2\n")
    return ["run", "--config", str(p), "--out", str(tmp / "o")], ["not valid YAML"]


def _config_is_folder(tmp, data, run):
    return ["run", "--config", str(tmp), "--out", str(tmp / "o")], ["is a folder"]


def _out_is_file(tmp, data, run):
    f = tmp / "afile"
    f.write_text("x")
    return ["run", "--data", str(data), "--out", str(f)], ["is a file", "give a folder"]


def _out_foreign_folder(tmp, data, run):
    d = tmp / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("x")
    return ["run", "--data", str(data), "--out", str(d)], ["not an edgekd run directory"]


def _set_typo(tmp, data, run):
    return ["run", "--data", str(data), "--out", str(tmp / "o"), "--set", "train.epoch=3"], ["train.epochs"]


def _set_no_equals(tmp, data, run):
    return ["run", "--data", str(data), "--out", str(tmp / "o"), "--set", "train.epochs"], ["key=value"]


def _set_out_of_range(tmp, data, run):
    return ["run", "--data", str(data), "--out", str(tmp / "o"), "--set", "kd.alpha=2"], ["kd.alpha"]


def _device(name):
    def setup(tmp, data, run):
        return _tiny_args(data, tmp / "o", f"train.device={name}"), [f"train.device={name}", "train.device=auto"]

    return setup


def _device_cuda(tmp, data, run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    return _tiny_args(data, tmp / "o", "train.device=cuda:3"), ["no CUDA GPU", "train.device=cpu"]


def _data_missing(tmp, data, run):
    return ["run", "--data", str(tmp / "no_such_data"), "--out", str(tmp / "o")], ["no_such_data"]


def _data_empty(tmp, data, run):
    (tmp / "empty").mkdir()
    return ["run", "--data", str(tmp / "empty"), "--out", str(tmp / "o")], ["empty"]


def _preset_typo(tmp, data, run):
    return ["run", "--preset", "quik", "--out", str(tmp / "o")], ["invalid choice"]


def _stage_typo(tmp, data, run):
    return ["run", "--data", str(data), "--out", str(tmp / "o"), "--stages", "data,techer"], ["techer"]


def _nproc_zero(tmp, data, run):
    return ["run", "--data", str(data), "--out", str(tmp / "o"), "--nproc-per-node", "0"], ["--nproc-per-node"]


def _rundir_missing(tmp, data, run):
    return ["evaluate", str(tmp / "nope")], ["run directory not found"]


def _rundir_is_file(tmp, data, run):
    (tmp / "f").write_text("x")
    return ["export", str(tmp / "f")], ["is a file"]


def _rundir_no_config(tmp, data, run):
    (tmp / "d").mkdir()
    return ["evaluate", str(tmp / "d")], ["not an edgekd run directory"]


def _config_yaml_broken(tmp, data, run):
    r = _copy(run, tmp)
    (r / "config.yaml").write_text("data: {image_size: 32\n")
    return ["evaluate", str(r)], ["config.yaml is not valid YAML", "fix it by hand"]


def _config_yaml_mistyped(tmp, data, run):
    r = _copy(run, tmp)
    text = (r / "config.yaml").read_text().replace("image_size:", "image_sise:")
    (r / "config.yaml").write_text(text)
    return ["evaluate", str(r)], ["config.yaml", "image_size"]


def _config_yaml_not_utf8(tmp, data, run):
    r = _copy(run, tmp)
    (r / "config.yaml").write_bytes(b"\xff\xfe\x00name")
    return ["bench", str(r)], ["config.yaml is not UTF-8"]


def _stages_json_corrupt(tmp, data, run):
    r = _copy(run, tmp)
    (r / "stages.json").write_text('{"data": {"fingerprint": ')
    return ["evaluate", str(r)], ["stages.json is corrupt", "delete it"]


def _teacher_meta_corrupt(tmp, data, run):
    r = _copy(run, tmp)
    (r / "teacher" / "meta.json").write_text("not json")
    return ["evaluate", str(r)], ["meta.json is corrupt"]


def _split_json_corrupt(tmp, data, run):
    r = _copy(run, tmp)
    (r / "data" / "split.json").write_text("[1, 2")
    return ["evaluate", str(r)], ["split.json"]


def _bench_without_teacher_meta(tmp, data, run):
    r = _copy(run, tmp)
    (r / "teacher" / "meta.json").unlink()
    return ["bench", str(r), "--min-queries", "1", "--min-seconds", "0"], ["teacher"]


def _evaluate_without_student(tmp, data, run):
    r = _copy(run, tmp)
    shutil.rmtree(r / "student")
    return ["evaluate", str(r)], ["distill"]


def _manifest_corrupt(tmp, data, run):
    r = _copy(run, tmp)
    (r / "exports").mkdir(exist_ok=True)
    (r / "exports" / "manifest.json").write_text("{")
    return ["android", "install", str(r), "--app", str(tmp / "app")], ["manifest"]


def _set_contradicts_weights(tmp, data, run):
    r = _copy(run, tmp)
    return ["evaluate", str(r), "--set", "student.width_mult=0.5"], ["contradicts", "edgekd distill"]


def _export_set_contradicts(tmp, data, run):
    r = _copy(run, tmp)
    return ["export", str(r), "--set", "data.image_size=64"], ["contradicts"]


def _truncated_checkpoint(tmp, data, run):
    r = _copy(run, tmp)
    ck = r / "student" / "checkpoint.pt"
    import torch

    torch.save({"epoch": 1, "weights": torch.zeros(1000)}, ck)
    ck.write_bytes(ck.read_bytes()[:200])
    return ["distill", str(r), "--resume"], ["checkpoint", "cannot be read", "delete it"]


def _locked(tmp, data, run):
    r = _copy(run, tmp)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _LIVE.append(holder)
    (r / ".edgekd.lock").write_text(
        json.dumps({"pid": holder.pid, "host": os.uname().nodename, "command": "edgekd run", "since": time.time()})
    )
    return ["evaluate", str(r)], ["another edgekd process", str(holder.pid)]


def _export_format_typo(tmp, data, run):
    r = _copy(run, tmp)
    return ["export", str(r), "--formats", "tflite-int9"], ["did you mean 'tflite-int8'"]


def _bench_profile_typo(tmp, data, run):
    r = _copy(run, tmp)
    return ["bench", str(r), "--profile", "tablett"], ["tablett"]


def _seeds_zero(tmp, data, run):
    r = _copy(run, tmp)
    return ["evaluate", str(r), "--seeds", "0"], ["train.seeds"]


def _golden_count_zero(tmp, data, run):
    return ["android", "install", str(run), "--golden-count", "0"], ["--golden-count 0"]


_LIVE: list = []

CASES = {
    "config-missing": _config_missing,
    "config-not-utf8": _config_not_utf8,
    "config-bad-yaml": _config_bad_yaml,
    "config-is-folder": _config_is_folder,
    "out-is-file": _out_is_file,
    "out-foreign-folder": _out_foreign_folder,
    "set-typo": _set_typo,
    "set-no-equals": _set_no_equals,
    "set-out-of-range": _set_out_of_range,
    "device-gpu": _device("gpu"),
    "device-mps": _device("mps"),
    "device-unknown": _device("banana"),
    "device-cuda-absent": _device_cuda,
    "data-missing": _data_missing,
    "data-empty": _data_empty,
    "preset-typo": _preset_typo,
    "stage-typo": _stage_typo,
    "nproc-zero": _nproc_zero,
    "rundir-missing": _rundir_missing,
    "rundir-is-file": _rundir_is_file,
    "rundir-no-config": _rundir_no_config,
    "config-yaml-broken": _config_yaml_broken,
    "config-yaml-mistyped": _config_yaml_mistyped,
    "config-yaml-not-utf8": _config_yaml_not_utf8,
    "stages-json-corrupt": _stages_json_corrupt,
    "teacher-meta-corrupt": _teacher_meta_corrupt,
    "split-json-corrupt": _split_json_corrupt,
    "bench-without-teacher-meta": _bench_without_teacher_meta,
    "evaluate-without-student": _evaluate_without_student,
    "manifest-corrupt": _manifest_corrupt,
    "set-contradicts-weights": _set_contradicts_weights,
    "export-set-contradicts": _export_set_contradicts,
    "truncated-checkpoint": _truncated_checkpoint,
    "run-dir-locked": _locked,
    "export-format-typo": _export_format_typo,
    "bench-profile-typo": _bench_profile_typo,
    "seeds-zero": _seeds_zero,
    "golden-count-zero": _golden_count_zero,
}


@pytest.fixture(autouse=True)
def _reap():
    yield
    while _LIVE:
        p = _LIVE.pop()
        p.kill()
        p.wait()


def test_table_and_cases_agree():
    rows = [
        line.split("|")[1].strip().strip("`")
        for line in (ROOT / "tests" / "bad_inputs.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    assert rows == list(CASES), "tests/bad_inputs.md and CASES must list the same ids in the same order"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(case, tmp_path, tiny_folder, tiny_run, capfd):
    argv, words = CASES[case](tmp_path, tiny_folder, tiny_run)
    before = {p: p.read_bytes() for p in tmp_path.rglob("config.yaml")}
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors (exit 2, usage + one error line)
        rc = e.code
    err = capfd.readouterr().err
    assert rc == 2, (case, rc, err[-2000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgekd: error:") or ln.startswith("edgekd: ")]
    if not err.startswith("usage:"):
        assert len(lines) == 1, err
    for w in words:
        assert w in err, (case, w, err)
    # nothing lost: no run directory's config.yaml was rewritten by a refused command
    for p, b in before.items():
        assert p.read_bytes() == b, f"{case}: {p} was rewritten"


# Not a bad input: sections that change no weights (tracking, the model card's texts) may be --set by every stage
# command; a section the command does not redo is still refused.
@pytest.mark.parametrize("command", ["teacher", "distill", "evaluate", "export", "bench"])
def test_track_and_card_are_settable_by_every_command(command, tiny_run):
    from edgekd.cli import SETTABLE, _run_config
    from edgekd.pipeline.errors import EdgekdError
    from edgekd.pipeline.rundir import RunDir

    assert command in SETTABLE
    run = RunDir(tiny_run)
    over = {"track": {"tensorboard": False, "mlflow": True}, "card": {"owner": "QA team", "data_license": "CC0"}}
    cfg = _run_config(run, over, command)
    assert cfg.card.owner == "QA team" and cfg.track.mlflow is True
    if command != "distill":  # the one command that retrains the student
        with pytest.raises(EdgekdError, match="contradicts"):
            _run_config(run, {**over, "student": {"width_mult": 0.5}}, command)


def test_card_set_on_evaluate_is_kept_and_reaches_the_model_card(tmp_path, tiny_run):
    r = _copy(tiny_run, tmp_path)
    assert main(["evaluate", str(r), "--set", "card.owner=QA team", "--set", "track.tensorboard=false"]) == 0
    from edgekd.pipeline.rundir import RunDir

    assert RunDir(r).config().card.owner == "QA team"
    assert "- Owner: QA team." in (r / "MODEL_CARD.md").read_text()
