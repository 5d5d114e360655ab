"""`edgekd android install`: put an exported TFLite student into the Android demo app.

Steps (each checked, each file written atomically: temp file in the target folder + os.replace):
  1. pick the artifact of the asked precision from RUN_DIR/exports/manifest.json; it must have
     status "ok" and a passed parity check (bundle.py);
  2. verify model.tflite against the manifest's and model.json's sha256, labels.txt against
     model.json, and the model's tensors (LiteRT) against model.json (bundle.py);
  3. copy model.tflite, labels.txt and model.json (last, so a half-finished install is refused by
     the app's hash check instead of running a mismatched model) into app/src/main/assets/, then the
     run's model card (model_card.json, MODEL_CARD.md: the app's "About this model" screen);
  4. write golden vectors into core/src/test/resources/golden/: test images (the run's test split,
     else synthetic), the input tensor Python computes for them, and the model's output and
     top-k from LiteRT in Python; the Java core's JUnit test must reproduce them (golden.py);
  5. with --build and an Android SDK here: ./gradlew :app:assembleDebug, then adb install -r.
     Without an SDK it prints the commands to run on a machine that has one (gradle.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from edgekd.android.bundle import atomic_copy, check_bundle, select_artifact
from edgekd.android.golden import write_golden
from edgekd.android.gradle import build_and_install, build_instructions, sdk_available
from edgekd.pipeline.errors import EdgekdError
from edgekd.pipeline.rundir import sha256_file

PRECISIONS = ("int8", "fp16", "fp32")
ASSETS = Path("app/src/main/assets")
GOLDEN = Path("core/src/test/resources/golden")
DEFAULT_APP = "android_demo"
CARD_FILES = ("model_card.json", "MODEL_CARD.md")  # written by edgekd.benchmarks.model_card


class BuildUnavailable(EdgekdError):
    """--build was asked where no Android SDK is found; `instructions` says what to run elsewhere."""

    def __init__(self, msg: str, instructions: list[str]):
        super().__init__(msg)
        self.instructions = instructions


def install(
    run_dir: Path,
    app: Path,
    precision: str = "int8",
    build: bool = False,
    device: Optional[str] = None,
    golden_count: int = 4,
) -> dict:
    """Copy the exported model into the app, write golden vectors, optionally build and install.

    Returns what was done; raises EdgekdError (one line) on any problem, BuildUnavailable when
    build=True but no Android SDK is found (after copying: the instructions say what to run)."""
    run_dir, app = Path(run_dir), Path(app)
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if int(golden_count) < 1:  # the app's JUnit test replays them: an install never leaves it without any
        raise EdgekdError(
            f"--golden-count {golden_count}: give 1 or more (the app's core tests replay the golden vectors; "
            "an install always writes them)"
        )
    art = select_artifact(run_dir, precision)
    if not (app.is_dir() and (app / "settings.gradle.kts").is_file() and (app / "app").is_dir()):
        raise EdgekdError(f"Android app not found at {app} (expected settings.gradle.kts and app/): pass --app")
    model_path = run_dir / str(art.get("path") or "")
    if not art.get("path") or not _inside(model_path, run_dir / "exports"):
        raise EdgekdError(
            f"{run_dir / 'exports' / 'manifest.json'}: artifact {art.get('name')!r} names path {art.get('path')!r}, "
            "which is not a file under the run's exports/; re-export (edgekd export RUN_DIR) instead of editing it"
        )
    meta = check_bundle(model_path, art.get("sha256"))

    assets = app / ASSETS
    model_name = str(meta.get("file", "model.tflite"))
    prefix = str(art.get("name") or "golden")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,63}", prefix) or ".." in prefix:
        prefix = "golden"  # a hand-edited manifest name must not become a path
    for target in (assets / model_name, assets / "labels.txt", assets / "model.json", app / GOLDEN / prefix):
        if not _inside(target, app):
            raise EdgekdError(f"refusing to write {target}: it is outside the app folder {app}")
    atomic_copy(model_path, assets / model_name, meta["sha256"])
    for extra in ("labels.txt", "model.json"):  # model.json last: it names the hash the app expects
        src = model_path.parent / extra
        atomic_copy(src, assets / extra, sha256_file(src))
    # the model card travels with the model (the app's "About this model" screen reads model_card.json); an older
    # run's card must not describe this model, so a missing one is removed from the assets
    cards = []
    for name in CARD_FILES:
        src = next((d / name for d in (model_path.parent, run_dir) if (d / name).is_file()), None)
        if src is None:
            (assets / name).unlink(missing_ok=True)
            continue
        atomic_copy(src, assets / name, sha256_file(src))
        cards.append(str(assets / name))

    golden = write_golden(assets / model_name, meta, app / GOLDEN, golden_count, run_dir, prefix=prefix)
    result: dict[str, Any] = {
        "artifact": art.get("name"),
        "precision": precision,
        "sha256": meta["sha256"],
        "size_bytes": (assets / model_name).stat().st_size,
        "assets": [str(assets / n) for n in (model_name, "labels.txt", "model.json")] + cards,
        "golden": [str(p) for p in golden],
        "built": False,
        "installed": False,
        "instructions": [],
    }
    if not build:
        result["instructions"] = build_instructions(app, device)
        return result
    if not sdk_available():
        raise BuildUnavailable(
            "--build asked, but no Android SDK here (no ANDROID_HOME/ANDROID_SDK_ROOT, no adb on "
            "PATH); the model was copied: run the commands above on a machine with the SDK",
            build_instructions(app, device),
        )
    result.update(build_and_install(app, device), built=True, installed=True)
    return result


def _inside(path: Path, root: Path) -> bool:
    """Does `path` (symlinks resolved) lie inside `root`?"""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def default_app() -> Path:
    """`android_demo` in the working directory, else the app this package lives in (a source checkout)."""
    here = Path(DEFAULT_APP)
    if here.is_dir():
        return here
    beside = Path(__file__).resolve().parent.parent  # android_demo/installer/install.py -> android_demo
    return beside if (beside / "settings.gradle.kts").is_file() else here


def print_result(result: dict, app: Path) -> None:
    """What `edgekd android install` prints after install() returned."""
    size = result["size_bytes"]
    size_text = f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    print(
        f"installed {result['artifact']} ({result['precision']}, sha256 {result['sha256'][:12]}, {size_text}) "
        f"into {Path(app) / ASSETS}"
    )
    print(f"golden vectors: {len(result['golden'])} in {Path(app) / GOLDEN}")
    if result["installed"]:
        print(f"built and installed {result['apk']}")
    else:
        print("\n".join(result["instructions"]))
