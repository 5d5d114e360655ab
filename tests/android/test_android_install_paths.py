"""`edgekd android install` never reads a model from outside RUN_DIR/exports and never writes outside the app
folder, whatever a hand-edited manifest or model.json names: exit 2 with one line, the app's assets untouched,
and no file anywhere else created or changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from edgekd.android.install import ASSETS, GOLDEN
from edgekd.cli import main


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under root outside `skip` (symlinks by their target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if Path(dirpath).resolve() == skip.resolve():
            dirs[:] = []
            continue
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _manifest_edit(run: Path, **changes) -> None:
    p = run / "exports/manifest.json"
    m = json.loads(p.read_text())
    for a in m["artifacts"]:
        if a["name"] == "tflite-int8":
            a.update(changes)
    p.write_text(json.dumps(m))


def _outside_bundle(run: Path, tmp: Path) -> Path:
    """A valid copy of the int8 bundle outside the run (a model that would pass every other check)."""
    dst = tmp / "outside" / "bundle"
    shutil.copytree(run / "exports/tflite-int8", dst)
    return dst


def _model_json_file(run: Path, name: str) -> None:
    p = run / "exports/tflite-int8/model.json"
    meta = json.loads(p.read_text())
    meta["file"] = name
    p.write_text(json.dumps(meta))


def _case(how: str, run: Path, tmp: Path) -> str:
    """Breaks the run one way; returns words the one-line answer must contain."""
    if how == "relative ../../etc/passwd":
        _manifest_edit(run, path="../../etc/passwd")
    elif how == "absolute /etc/passwd":
        _manifest_edit(run, path="/etc/passwd")
    elif how == "relative path to a valid model outside the run":
        b = _outside_bundle(run, tmp)
        _manifest_edit(run, path=os.path.relpath(b / "model.tflite", run))
    elif how == "absolute path to a valid model outside the run":
        _manifest_edit(run, path=str(_outside_bundle(run, tmp) / "model.tflite"))
    elif how == "exports/.. climbing out":
        b = _outside_bundle(run, tmp)
        _manifest_edit(run, path="exports/" + os.path.relpath(b / "model.tflite", run / "exports"))
    elif how == "symlinked artifact folder":
        b = _outside_bundle(run, tmp)
        shutil.rmtree(run / "exports/tflite-int8")
        (run / "exports/tflite-int8").symlink_to(b, target_is_directory=True)
    elif how == "model.json file climbing out of the app":
        _model_json_file(run, "../" * 8 + str(tmp / "pwned.tflite").lstrip("/"))
        return "is not a plain .tflite file name"
    elif how == "model.json file absolute":
        _model_json_file(run, str(tmp / "outside" / "pwned.tflite"))
        return "is not a plain .tflite file name"
    return "not a file under the run's exports/"


CASES = [
    "relative ../../etc/passwd",
    "absolute /etc/passwd",
    "relative path to a valid model outside the run",
    "absolute path to a valid model outside the run",
    "exports/.. climbing out",
    "symlinked artifact folder",
    "model.json file climbing out of the app",
    "model.json file absolute",
]


@pytest.mark.parametrize("how", CASES)
def test_manifest_paths_outside_are_refused_and_nothing_is_written(how, run_copy, app_copy, tmp_path, capsys):
    words = _case(how, run_copy, tmp_path)
    before = _snapshot(tmp_path, skip=app_copy)
    app_before = _snapshot(app_copy, skip=tmp_path / "no-such")
    rc = main(["android", "install", str(run_copy), "--app", str(app_copy), "--precision", "int8"])
    err = capsys.readouterr().err
    assert rc == 2, (how, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: ") and words in lines[0], err
    assert _snapshot(tmp_path, skip=app_copy) == before  # nothing written anywhere else
    assert _snapshot(app_copy, skip=tmp_path / "no-such") == app_before  # nor into the app
    assert not list(tmp_path.rglob("pwned*"))


def test_artifact_name_is_not_a_path_for_golden_vectors(run_copy, app_copy, tmp_path, capsys):
    """A manifest `name` that climbs (../../../pwned) names no file: the golden vectors keep the safe default name,
    inside the app's golden folder, and nothing outside the app changes."""
    _manifest_edit(run_copy, name="../../../../pwned")
    before = _snapshot(tmp_path, skip=app_copy)
    rc = main(["android", "install", str(run_copy), "--app", str(app_copy), "--golden-count", "2"])
    capsys.readouterr()
    assert rc == 0
    assert _snapshot(tmp_path, skip=app_copy) == before
    golden = app_copy / GOLDEN
    names = (golden / "index.txt").read_text().split()
    assert names and all(n.startswith("golden_") and "/" not in n for n in names)
    assert all((golden / n).is_file() for n in names)
    assert not list(tmp_path.rglob("pwned*")) and (app_copy / ASSETS / "model.tflite").is_file()
