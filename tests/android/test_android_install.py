"""`edgekd android install`: asset contract, one-line errors, and the build/install branches
(fake adb and gradlew that log their arguments; no Android SDK is needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.android.install import ASSETS, GOLDEN, default_app, install
from edgekd.cli import main
from edgekd.pipeline.errors import EdgekdError

APP = Path(__file__).resolve().parents[2] / "android_demo"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _check_asset_contract(assets: Path) -> dict:
    """What the app relies on, checked independently of edgekd.android."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((assets / "model.json").read_text())
    assert meta["schema"] == "edgekd.model/1"
    assert meta["format"] == "tflite" and meta["file"] == "model.tflite"
    for key in ("name", "precision", "sha256", "labels", "num_classes", "input", "output"):
        assert key in meta, key
    i = meta["input"]
    assert i["layout"] in ("NHWC", "NCHW") and i["channels"] == 3 and i["color_mode"] == "RGB"
    assert i["resize"] == "bilinear_half_pixel" and i["dtype"] in ("float32", "int8", "uint8")
    assert len(i["mean"]) == 3 and len(i["std"]) == 3 and min(i["std"]) > 0
    assert _sha(assets / "model.tflite") == meta["sha256"]
    labels = [x for x in (assets / "labels.txt").read_text().splitlines() if x.strip()]
    assert labels == meta["labels"] and len(labels) == meta["num_classes"] == meta["output"]["num_classes"]
    interp = Interpreter(model_path=str(assets / "model.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert int(np.prod(out["shape"])) == len(labels)
    shape = [1, i["height"], i["width"], 3] if i["layout"] == "NHWC" else [1, 3, i["height"], i["width"]]
    assert list(inp["shape"]) == shape
    assert np.dtype(inp["dtype"]).name == i["dtype"]
    return meta


@pytest.fixture
def no_sdk(monkeypatch, tmp_path):
    """No ANDROID_HOME/ANDROID_SDK_ROOT and a PATH without adb."""
    monkeypatch.delenv("ANDROID_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32"])
def test_install_copies_verified_assets(android_run, app_copy, precision, no_sdk):
    r = install(android_run, app_copy, precision=precision, golden_count=3)
    assets = app_copy / ASSETS
    meta = _check_asset_contract(assets)
    manifest = json.loads((android_run / "exports/manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "tflite" and a["precision"] == precision)
    assert meta["precision"] == precision and meta["sha256"] == art["sha256"] == r["sha256"]
    assert (assets / "model.tflite").read_bytes() == (android_run / art["path"]).read_bytes()
    # atomic writes leave no temp files behind
    assert sorted(p.name for p in assets.iterdir()) == [".gitkeep", "labels.txt", "model.json", "model.tflite"]
    assert all((assets / n).stat().st_mode & 0o777 == 0o644 for n in ("labels.txt", "model.json", "model.tflite"))
    golden = app_copy / GOLDEN
    assert (golden / "index.txt").read_text().split() == [Path(p).name for p in r["golden"]]
    assert len(r["golden"]) == 3 and not list(golden.glob(".*tmp"))
    assert r["built"] is False and r["installed"] is False


def test_reinstall_replaces_model_and_golden(android_run, app_copy, no_sdk):
    install(android_run, app_copy, precision="fp32", golden_count=2)
    r = install(android_run, app_copy, precision="int8", golden_count=2)
    assert json.loads((app_copy / ASSETS / "model.json").read_text())["precision"] == "int8"
    assert sorted(p.name for p in (app_copy / GOLDEN).glob("*.json")) == sorted(Path(p).name for p in r["golden"])


def test_installed_assets_in_repository_follow_the_contract():
    """If a model has been installed into the repository's app, it must be a coherent bundle."""
    assets = APP / ASSETS
    if not (assets / "model.json").exists():
        pytest.skip("no model installed in android_demo/ (run `edgekd android install RUN_DIR`)")
    _check_asset_contract(assets)


# -- one-line errors -----------------------------------------------------------------------------


def _manifest(run: Path) -> dict:
    return json.loads((run / "exports/manifest.json").read_text())


def _save_manifest(run: Path, m: dict) -> None:
    (run / "exports/manifest.json").write_text(json.dumps(m))


def _edit_artifact(run: Path, name: str, **changes) -> None:
    m = _manifest(run)
    for a in m["artifacts"]:
        if a["name"] == name:
            a.update(changes)
    _save_manifest(run, m)


def _break(run: Path, how: str) -> dict:
    """Breaks a copy of the run one way; returns install() kwargs when the app must change."""
    if how == "run dir missing":
        return {"run_dir": run / "nope"}
    if how == "no manifest":
        (run / "exports/manifest.json").unlink()
    elif how == "no artifact of that precision":
        m = _manifest(run)
        m["artifacts"] = [a for a in m["artifacts"] if a["precision"] != "int8"]
        _save_manifest(run, m)
    elif how == "failed status":
        _edit_artifact(run, "tflite-int8", status="failed", reason="converter crashed")
    elif how == "parity failed":
        _edit_artifact(run, "tflite-int8", parity={"status": "failed", "max_abs_diff": 0.4})
    elif how == "parity unchecked":
        _edit_artifact(run, "tflite-int8", parity=None)
    elif how == "sha mismatch (manifest)":
        f = run / "exports/tflite-int8/model.tflite"
        f.write_bytes(f.read_bytes() + b"\0")
    elif how == "sha mismatch (model.json)":
        f = run / "exports/tflite-int8/model.json"
        meta = json.loads(f.read_text())
        meta["sha256"] = "0" * 64
        f.write_text(json.dumps(meta))
    elif how == "labels mismatch":
        (run / "exports/tflite-int8/labels.txt").write_text("a\nb\nc\nd\n")
    elif how == "app dir missing":
        return {"app": run / "no-app"}
    return {}


ERRORS = {
    "run dir missing": "run directory not found",
    "no manifest": "no exports manifest",
    "no artifact of that precision": "no tflite artifact with precision int8",
    "failed status": "has status failed: converter crashed",
    "parity failed": "did not pass parity (parity status is 'failed')",
    "parity unchecked": "did not pass parity (parity was not checked)",
    "sha mismatch (manifest)": "sha256 mismatch",
    "sha mismatch (model.json)": "model.json says 000000000000",
    "labels mismatch": "does not match model.json labels",
    "app dir missing": "Android app not found",
}


@pytest.mark.parametrize("how", list(ERRORS))
def test_clear_one_line_errors(run_copy, app_copy, how):
    kwargs = {"run_dir": run_copy, "app": app_copy, "precision": "int8"}
    kwargs.update(_break(run_copy, how))
    with pytest.raises(EdgekdError) as e:
        install(**kwargs)
    msg = str(e.value)
    assert ERRORS[how] in msg and "\n" not in msg, msg
    # nothing was copied into the app
    assert [p.name for p in (app_copy / ASSETS).iterdir()] == [".gitkeep"]


def test_missing_precision_lists_what_exists(run_copy, app_copy):
    _break(run_copy, "no artifact of that precision")
    with pytest.raises(EdgekdError, match=r"tflite artifacts: tflite \(fp32, ok\), tflite-fp16 \(fp16, ok\)"):
        install(run_copy, app_copy, precision="int8")


# -- the CLI and its build branches ---------------------------------------------------------------


def test_cli_without_sdk_copies_and_prints_instructions(android_run, app_copy, no_sdk, capsys):
    rc = main(
        [
            "android",
            "install",
            str(android_run),
            "--app",
            str(app_copy),
            "--precision",
            "fp16",
            "--device",
            "TAB01",
            "--golden-count",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "installed tflite-fp16 (fp16, sha256" in out
    assert f"cd {app_copy}" in out
    assert "./gradlew :app:assembleDebug" in out
    assert "adb -s TAB01 install -r app/build/outputs/apk/debug/app-debug.apk" in out
    assert json.loads((app_copy / ASSETS / "model.json").read_text())["precision"] == "fp16"


def test_cli_build_without_sdk_fails_after_copying(android_run, app_copy, no_sdk, capsys):
    rc = main(["android", "install", str(android_run), "--app", str(app_copy), "--build", "--golden-count", "1"])
    out, err = capsys.readouterr()
    # exit code 2 and a one-line message, after the commands to run elsewhere
    assert rc == 2 and err.startswith("edgekd: error: --build asked, but no Android SDK here"), err
    assert err.count("\n") == 1, err
    assert "./gradlew :app:assembleDebug" in out and "adb install -r app/build/outputs/apk/debug/app-debug.apk" in out
    assert (app_copy / ASSETS / "model.tflite").is_file()


def test_cli_one_line_error_and_nothing_copied(run_copy, app_copy, capsys):
    _break(run_copy, "parity failed")
    rc = main(["android", "install", str(run_copy), "--app", str(app_copy)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("edgekd: error: artifact tflite-int8 did not pass parity"), err
    assert err.count("\n") == 1
    assert [p.name for p in (app_copy / ASSETS).iterdir()] == [".gitkeep"]


def test_default_app_is_the_app_around_the_installer(tmp_path, monkeypatch):
    """From a folder without android_demo/, the app is the one the installer package lives in."""
    monkeypatch.chdir(tmp_path)
    assert default_app().resolve() == APP.resolve()
    (tmp_path / "android_demo").mkdir()
    assert default_app() == Path("android_demo")


def _fake_sdk(tmp_path: Path, app: Path, monkeypatch, gradle_rc: int = 0) -> Path:
    """ANDROID_HOME + an adb on PATH + a gradlew in the app, all logging their argv to log.txt."""
    log = tmp_path / "log.txt"
    sdk = tmp_path / "sdk"
    (sdk / "platform-tools").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f'#!/bin/sh\necho "adb $*" >> "{log}"\nexit 0\n')
    adb.chmod(0o755)
    gradlew = app / "gradlew"
    # shell builtins only: PATH holds nothing but the fake adb
    gradlew.write_text(
        f'#!/bin/sh\necho "gradlew $* (in $PWD)" >> "{log}"\n'
        f": > app/build/outputs/apk/debug/app-debug.apk\nexit {gradle_rc}\n"
    )
    gradlew.chmod(0o755)
    (app / "app/build/outputs/apk/debug").mkdir(parents=True)
    monkeypatch.setenv("ANDROID_HOME", str(sdk))
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def test_cli_build_and_install_with_sdk(android_run, app_copy, tmp_path, monkeypatch, capsys):
    log = _fake_sdk(tmp_path, app_copy, monkeypatch)
    rc = main(
        [
            "android",
            "install",
            str(android_run),
            "--app",
            str(app_copy),
            "--build",
            "--device",
            "SERIAL123",
            "--golden-count",
            "1",
        ]
    )
    assert rc == 0
    lines = log.read_text().splitlines()
    assert lines == [
        f"gradlew :app:assembleDebug (in {app_copy.resolve()})",
        "adb -s SERIAL123 install -r app/build/outputs/apk/debug/app-debug.apk",
    ], lines
    assert "built and installed" in capsys.readouterr().out


def test_build_failure_is_reported(android_run, app_copy, tmp_path, monkeypatch):
    log = _fake_sdk(tmp_path, app_copy, monkeypatch, gradle_rc=3)
    with pytest.raises(EdgekdError, match=r"./gradlew :app:assembleDebug failed with exit code 3"):
        install(android_run, app_copy, build=True, golden_count=1)
    assert "adb" not in log.read_text()  # nothing installed after a failed build
