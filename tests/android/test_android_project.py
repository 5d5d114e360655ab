"""The Android project itself: manifest and resources link with aapt2 against the framework,
the manifest asks for no network, and the Gradle files keep the contract (no APK build here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "android_demo"
FRAMEWORK = Path("/usr/share/android-framework-res/framework-res.apk")
ANDROID = "{http://schemas.android.com/apk/res/android}"
TOOLS = "{http://schemas.android.com/tools}"
MANIFEST = APP / "app/src/main/AndroidManifest.xml"
NETWORK_PERMISSIONS = {
    "android.permission.INTERNET",
    "android.permission.ACCESS_NETWORK_STATE",
    "android.permission.ACCESS_WIFI_STATE",
    "android.permission.CHANGE_NETWORK_STATE",
}


def _requested_permissions(root: ET.Element) -> set[str]:
    """Permissions the merged manifest keeps: tools:node="remove" entries are deleted by the merger."""
    return {e.get(f"{ANDROID}name") for e in root.iter("uses-permission") if e.get(f"{TOOLS}node") != "remove"}


def test_manifest_requests_no_network():
    root = ET.parse(MANIFEST).getroot()
    perms = _requested_permissions(root)
    assert "android.permission.CAMERA" in perms
    assert not perms & NETWORK_PERMISSIONS, f"network permissions requested: {perms & NETWORK_PERMISSIONS}"
    # and INTERNET is actively stripped in case a library's manifest would merge it in
    removed = [e for e in root.iter("uses-permission") if e.get(f"{TOOLS}node") == "remove"]
    assert {e.get(f"{ANDROID}name") for e in removed} == {"android.permission.INTERNET"}
    activity = root.find("application/activity")
    assert activity is not None and activity.get(f"{ANDROID}exported") == "true"
    assert (
        root.find("application/activity/intent-filter/category").get(f"{ANDROID}name")
        == "android.intent.category.LAUNCHER"
    )


def _merged_manifest_for_aapt(dst: Path) -> Path:
    """What AGP's manifest merger hands aapt2: package from `namespace`, tools: nodes applied."""
    tree = ET.parse(MANIFEST)
    root = tree.getroot()
    for parent in list(root.iter()):
        for child in list(parent):
            if child.get(f"{TOOLS}node") == "remove":
                parent.remove(child)
    for e in root.iter():
        for k in [k for k in e.attrib if k.startswith(TOOLS)]:
            del e.attrib[k]
    namespace = re.search(r'namespace\s*=\s*"([^"]+)"', (APP / "app/build.gradle.kts").read_text()).group(1)
    root.set("package", namespace)
    ET.register_namespace("android", ANDROID[1:-1])
    tree.write(dst, xml_declaration=True, encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def aapt2() -> str:
    exe = shutil.which("aapt2")
    if exe is None or not FRAMEWORK.is_file():
        pytest.skip(
            "aapt2 or framework-res.apk absent: apt-get install -y --no-install-recommends aapt android-framework-res"
        )
    return exe


def test_resources_and_manifest_link_against_framework(aapt2, tmp_path):
    res_zip = tmp_path / "res.zip"
    r = subprocess.run(
        [aapt2, "compile", "--dir", str(APP / "app/src/main/res"), "-o", str(res_zip)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    manifest = _merged_manifest_for_aapt(tmp_path / "AndroidManifest.xml")
    apk = tmp_path / "app.apk"
    # framework-res.apk here is API 29: min 24 as in build.gradle.kts, target capped at what it knows
    r = subprocess.run(
        [
            aapt2,
            "link",
            "-I",
            str(FRAMEWORK),
            "--manifest",
            str(manifest),
            "--min-sdk-version",
            "24",
            "--target-sdk-version",
            "29",
            "-o",
            str(apk),
            str(res_zip),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    dump = subprocess.run([aapt2, "dump", "permissions", str(apk)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert "android.permission.CAMERA" in dump.stdout
    assert not any(p in dump.stdout for p in NETWORK_PERMISSIONS), dump.stdout


def test_aapt2_link_catches_a_broken_resource(aapt2, tmp_path):
    """The link step is a real check: an unknown style parent fails it."""
    res = Path(shutil.copytree(APP / "app/src/main/res", tmp_path / "res"))
    themes = res / "values/themes.xml"
    themes.write_text(themes.read_text().replace("android:Theme.Material.Light.NoActionBar", "Theme.Material3.Light"))
    res_zip = tmp_path / "res.zip"
    assert subprocess.run([aapt2, "compile", "--dir", str(res), "-o", str(res_zip)]).returncode == 0
    manifest = _merged_manifest_for_aapt(tmp_path / "AndroidManifest.xml")
    r = subprocess.run(
        [
            aapt2,
            "link",
            "-I",
            str(FRAMEWORK),
            "--manifest",
            str(manifest),
            "--min-sdk-version",
            "24",
            "-o",
            str(tmp_path / "x.apk"),
            str(res_zip),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0


def test_gradle_project_keeps_the_contract():
    app_gradle = (APP / "app/build.gradle.kts").read_text()
    assert 'noCompress += "tflite"' in app_gradle  # memory-mapped model
    assert 'implementation(project(":core"))' in app_gradle
    assert "minSdk = 24" in app_gradle
    assert "implementation(libs.litert)" in app_gradle
    settings = (APP / "settings.gradle.kts").read_text()
    assert 'include(":app")' in settings and 'include(":core")' in settings
    catalog = (APP / "gradle/libs.versions.toml").read_text()
    for pin in ('agp = "8.9', 'kotlin = "2.1', 'litert = "2.1.0"', 'camerax = "1.3', "com.google.ai.edge.litert"):
        assert pin in catalog, pin
    core_gradle = (APP / "core/build.gradle.kts").read_text()
    assert "java-library" in core_gradle and "release.set(8)" in core_gradle
    wrapper = (APP / "gradle/wrapper/gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=.*gradle-8\.(1[1-9]|[2-9]\d)(\.\d+)?-bin\.zip", wrapper)
    assert os.access(APP / "gradlew", os.X_OK)


def test_gradlew_explains_a_missing_wrapper_jar(tmp_path):
    if (APP / "gradle/wrapper/gradle-wrapper.jar").exists():
        pytest.skip("the wrapper jar is present")
    r = subprocess.run(["sh", str(APP / "gradlew"), ":app:assembleDebug"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "gradle wrapper" in r.stderr and "Android Studio" in r.stderr


def test_kotlin_app_uses_core_for_all_processing():
    src = {p.name: p.read_text() for p in (APP / "app/src/main/java").rglob("*.kt")}
    classifier = src["Classifier.kt"]
    for needed in (
        "Preprocessor.toInputTensor",
        "Preprocessor.fillInputBuffer",
        "Postprocessor.classify",
        "ModelVerifier.verify",
        "ModelInfo.parse",
        "setNumThreads",
        "FileChannel.MapMode.READ_ONLY",
        "org.tensorflow.lite.Interpreter",
    ):
        assert needed in classifier, needed
    allsrc = "\n".join(src.values())
    for needed in ("ImageAnalysis", "PickVisualMedia", "OUTPUT_IMAGE_FORMAT_RGBA_8888", "preprocess", "inference"):
        assert needed in allsrc, needed
    assert "createScaledBitmap" not in allsrc  # Android's scaler is not the contract's resize
