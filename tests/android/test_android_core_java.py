"""The pure-Java core: compiles with `javac --release 8`, passes its JUnit 4 tests, and reproduces
the Python preprocessing/postprocessing on golden vectors written by `edgekd android install`."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

APP = Path(__file__).resolve().parents[2] / "android_demo"
CORE = APP / "core"
JARS = {
    "junit": Path("/usr/share/java/junit4.jar"),
    "hamcrest": Path("/usr/share/java/hamcrest-core.jar"),
    "json": Path("/usr/share/java/com.android.json.jar"),  # Debian libandroid-json-java: Android's org.json
}
JUNIT_OK = re.compile(r"^OK \((\d+) tests?\)$", re.M)


def _need_java() -> None:
    missing = [n for n in ("javac", "java") if shutil.which(n) is None]
    missing += [str(p) for p in JARS.values() if not p.is_file()]
    if missing:
        pytest.skip(
            f"Java toolchain absent ({', '.join(missing)}): apt-get install -y --no-install-recommends "
            "default-jdk-headless junit4 libandroid-json-java"
        )


def _cp(*parts: Path) -> str:
    return ":".join(str(p) for p in parts)


@pytest.fixture(scope="session")
def core_classes(tmp_path_factory) -> tuple[Path, Path]:
    """(main classes, test classes) compiled with --release 8 (Java 8 language and API)."""
    _need_java()
    out = tmp_path_factory.mktemp("core-classes")
    main, test = out / "main", out / "test"
    srcs = sorted(str(p) for p in (CORE / "src/main/java").rglob("*.java"))
    tests = sorted(str(p) for p in (CORE / "src/test/java").rglob("*.java"))
    for dst, cp, files in ((main, _cp(JARS["json"]), srcs), (test, _cp(JARS["json"], main, JARS["junit"]), tests)):
        r = subprocess.run(
            [
                "javac",
                "--release",
                "8",
                "-Xlint:all",
                "-Werror",
                "-encoding",
                "UTF-8",
                "-cp",
                cp,
                "-d",
                str(dst),
                *files,
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, f"javac failed:\n{r.stdout}\n{r.stderr}"
    return main, test


def _junit(classes: tuple[Path, Path], resources: Path) -> subprocess.CompletedProcess:
    main, test = classes
    names = sorted(
        p.relative_to(test).with_suffix("").as_posix().replace("/", ".")
        for p in test.rglob("*Test.class")
        if "$" not in p.name
    )
    assert names, "no JUnit test classes compiled"
    cp = _cp(main, test, resources, JARS["json"], JARS["junit"], JARS["hamcrest"])
    return subprocess.run(
        ["java", "-cp", cp, "org.junit.runner.JUnitCore", *names], capture_output=True, text=True, timeout=120
    )


def _tests_run(r: subprocess.CompletedProcess) -> int:
    m = JUNIT_OK.search(r.stdout)
    assert r.returncode == 0 and m, f"JUnit failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    return int(m.group(1))


def test_core_has_no_android_imports():
    for src in (CORE / "src").rglob("*.java"):
        text = src.read_text()
        assert not re.search(r"^import\s+(android|androidx)\.", text, re.M), f"{src} imports Android classes"


def test_junit_unit_tests_pass_without_golden(core_classes, tmp_path):
    """Softmax, top-k, model.json parsing, sha refusal, NCHW/NHWC, int8 quantization (no golden files)."""
    r = _junit(core_classes, tmp_path)  # empty resources: the golden test skips itself
    assert _tests_run(r) >= 15


def test_committed_golden_vectors_pass(core_classes):
    """The golden vectors committed in core/src/test/resources (what `./gradlew :core:test` reads) pass."""
    res = CORE / "src/test/resources"
    names = (res / "golden" / "index.txt").read_text().split()
    assert names, "no committed golden vectors"
    r = _junit(core_classes, res)
    assert _tests_run(r) > 0
    assert f"GOLDEN OK: {len(names)} vectors" in r.stdout, r.stdout[-3000:]


@pytest.fixture(scope="session")
def golden_resources(android_run, app_factory, tmp_path_factory) -> Path:
    """Golden vectors of all three artifacts (fp32 NHWC, fp16 NCHW, int8 NHWC), as resources/golden/."""
    from edgekd.android.install import install

    app = app_factory(tmp_path_factory.mktemp("app") / "android_demo")
    res = tmp_path_factory.mktemp("resources")
    (res / "golden").mkdir()
    names = []
    for precision in ("fp32", "fp16", "int8"):
        result = install(android_run, app, precision=precision, golden_count=5)
        for p in map(Path, result["golden"]):
            shutil.copy(p, res / "golden" / p.name)
            names.append(p.name)
    (res / "golden" / "index.txt").write_text("\n".join(names) + "\n")
    return res


def test_golden_vectors_match_python(core_classes, golden_resources):
    """Same image -> same tensor (1e-5) -> same top-k as Python, for every artifact."""
    r = _junit(core_classes, golden_resources)
    assert _tests_run(r) > 0
    expected = len((golden_resources / "golden" / "index.txt").read_text().split())
    assert f"GOLDEN OK: {expected} vectors" in r.stdout, r.stdout[-3000:]
    assert expected == 15


def test_golden_tensors_are_the_python_contract(golden_resources):
    """The golden tensors equal pipeline.preprocess.preprocess_rgb and torch's interpolate directly."""
    import torch
    import torch.nn.functional as F

    from edgekd.pipeline.preprocess import preprocess_rgb

    sources = set()
    for f in sorted((golden_resources / "golden").glob("*.json")):
        g = json.loads(f.read_text())
        m, im = g["model"]["input"], g["image"]
        rgb = np.frombuffer(base64.b64decode(im["rgb_b64"]), np.uint8).reshape(im["height"], im["width"], 3).copy()
        tensor = np.frombuffer(base64.b64decode(g["input"]["float_b64"]), "<f4").reshape(g["input"]["shape"])
        ref = preprocess_rgb(rgb, m["height"], m["width"], m["mean"], m["std"], layout=m["layout"])
        np.testing.assert_allclose(tensor, ref, atol=1e-6, rtol=0)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(m["height"], m["width"]), mode="bilinear", align_corners=False, antialias=False)
        x = (x / 255 - torch.tensor(m["mean"]).view(1, 3, 1, 1)) / torch.tensor(m["std"]).view(1, 3, 1, 1)
        if m["layout"] == "NHWC":
            x = x.permute(0, 2, 3, 1)
        np.testing.assert_allclose(tensor, x.numpy(), atol=1e-5, rtol=0)
        sources.add(g["source"].split(":")[0].split("-")[0])
    assert sources == {"test", "synthetic"}  # the run's test split first, then synthetic images


def test_golden_test_fails_on_a_wrong_tensor(core_classes, golden_resources, tmp_path):
    """The JUnit golden check has teeth: a 1e-4 change in one expected value fails it."""
    res = Path(shutil.copytree(golden_resources, tmp_path / "res"))
    name = (res / "golden" / "index.txt").read_text().split()[0]
    g = json.loads((res / "golden" / name).read_text())
    t = np.frombuffer(base64.b64decode(g["input"]["float_b64"]), "<f4").copy()
    t[7] += 1e-4
    g["input"]["float_b64"] = base64.b64encode(t.tobytes()).decode()
    (res / "golden" / name).write_text(json.dumps(g))
    r = _junit(core_classes, res)
    assert r.returncode != 0 and "max |java - python|" in r.stdout, r.stdout[-2000:]


def test_committed_golden_vectors_are_todays_python_contract():
    """The golden vectors committed with the app (core/src/test/resources/golden, what `./gradlew :core:test`
    replays on a developer's machine) still describe today's Python side, without Java: each input tensor is
    pipeline.preprocess.preprocess_rgb of the stored image under the stored model.json contract, the raw output
    decodes to the stored logits, the probabilities are their softmax and the top-k is that softmax ranked
    with the model's labels. A change to the Python preprocessing (resize, normalisation, layout) that the
    app would not follow fails here."""
    from edgekd.pipeline.preprocess import preprocess_rgb

    res = CORE / "src/test/resources/golden"
    names = (res / "index.txt").read_text().split()
    assert names and sorted(names) == sorted(p.name for p in res.glob("*.json"))
    for name in names:
        g = json.loads((res / name).read_text())
        assert g["schema"] == "edgekd.golden/1", name
        m, im, inp, out = g["model"], g["image"], g["input"], g["output"]
        c = m["input"]
        rgb = np.frombuffer(base64.b64decode(im["rgb_b64"]), np.uint8).reshape(im["height"], im["width"], 3).copy()
        tensor = np.frombuffer(base64.b64decode(inp["float_b64"]), "<f4").reshape(inp["shape"])
        want_shape = [1, c["height"], c["width"], 3] if c["layout"] == "NHWC" else [1, 3, c["height"], c["width"]]
        assert inp["shape"] == want_shape, name
        ref = preprocess_rgb(rgb, c["height"], c["width"], c["mean"], c["std"], layout=c["layout"])
        np.testing.assert_allclose(tensor, ref, atol=1e-6, rtol=0, err_msg=name)
        raw = np.frombuffer(base64.b64decode(out["raw_b64"]), "<f4" if out["dtype"] == "float32" else np.int8)
        assert out["quantization"] is None or out["dtype"] != "float32"
        logits = np.asarray(g["logits"])
        if out["quantization"] is None:
            np.testing.assert_array_equal(raw.astype(np.float32), logits.astype(np.float32), err_msg=name)
        e = np.exp(logits - logits.max())
        np.testing.assert_allclose(g["probabilities"], e / e.sum(), rtol=1e-6, err_msg=name)
        order = [int(i) for i in np.argsort(-e, kind="stable")][: len(g["topk"])]
        assert [t["index"] for t in g["topk"]] == order, name
        assert [t["label"] for t in g["topk"]] == [m["labels"][i] for i in order], name
