"""Building the app and putting it on the tablet: Android SDK detection, ./gradlew, adb.

Without an SDK the installer prints the commands instead (build_instructions).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from edgekd.pipeline.errors import EdgekdError

APK = "app/build/outputs/apk/debug/app-debug.apk"
GRADLE_TASK = ":app:assembleDebug"
SDK_VARS = ("ANDROID_HOME", "ANDROID_SDK_ROOT")


def find_adb() -> Optional[str]:
    """adb on PATH, else in the SDK's platform-tools."""
    found = shutil.which("adb")
    if found:
        return found
    for var in SDK_VARS:
        root = os.environ.get(var)
        if root and (Path(root) / "platform-tools" / "adb").is_file():
            return str(Path(root) / "platform-tools" / "adb")
    return None


def sdk_available() -> bool:
    """An Android SDK is usable here: ANDROID_HOME/ANDROID_SDK_ROOT points at a folder, or adb is on PATH."""
    return any(os.environ.get(v) and Path(os.environ[v]).is_dir() for v in SDK_VARS) or find_adb() is not None


def build_instructions(app: Path, device: Optional[str]) -> list[str]:
    serial = f"-s {device} " if device else ""
    return [
        "To build and install the app, on a machine with the Android SDK (ANDROID_HOME set, adb on PATH)",
        "and the tablet connected over USB with USB debugging on, run:",
        f"  cd {app}",
        f"  ./gradlew {GRADLE_TASK}",
        f"  adb {serial}install -r {APK}",
        "(If gradle/wrapper/gradle-wrapper.jar is missing, run `gradle wrapper` once or open the project in",
        "Android Studio, which creates it. Or copy the app folder there and run "
        "`edgekd android install RUN_DIR --build`.)",
    ]


def build_and_install(app: Path, device: Optional[str]) -> dict:
    """./gradlew :app:assembleDebug in `app`, then adb install -r; {"apk", "adb"} or a one-line error."""
    gradlew = app / "gradlew"
    if not gradlew.is_file():
        raise EdgekdError(f"no gradle wrapper at {gradlew}: the app folder is incomplete")
    # a checkout or copy can lose the executable bit: run the script through sh then
    exe = [str(gradlew.resolve())] if os.access(gradlew, os.X_OK) else ["sh", str(gradlew.resolve())]
    r = subprocess.run([*exe, GRADLE_TASK], cwd=app)
    if r.returncode != 0:
        raise EdgekdError(
            f"./gradlew {GRADLE_TASK} failed with exit code {r.returncode} (in {app}); see its output above"
        )
    apk = app / APK
    if not apk.is_file():
        raise EdgekdError(f"the build succeeded but {apk} is missing")
    adb = find_adb()
    if adb is None:
        raise EdgekdError(f"built {apk}, but adb was not found (put platform-tools on PATH) to install it")
    cmd = [adb, *(["-s", device] if device else []), "install", "-r", APK]
    r = subprocess.run(cmd, cwd=app)
    if r.returncode != 0:
        raise EdgekdError(
            f"adb install failed with exit code {r.returncode}: is the device connected and authorised (adb devices)?"
        )
    return {"apk": str(apk), "adb": adb}
