"""`edgekd android install`: put an exported TFLite student into the Android demo app.

Steps (each checked, each file written atomically: temp file in the target folder + os.replace):
  1. pick the artifact of the asked precision from RUN_DIR/exports/manifest.json; it must have
     status "ok" and a passed parity check;
  2. verify model.tflite against the manifest's and model.json's sha256, labels.txt against
     model.json, and the model's tensors (LiteRT interpreter) against model.json;
  3. copy model.tflite, labels.txt and model.json (last, so a half-finished install is refused by
     the app's hash check instead of running a mismatched model) into app/src/main/assets/;
  4. write golden vectors into core/src/test/resources/golden/: test images (the run's test split,
     else synthetic), the input tensor Python computes for them, and the model's output and
     top-k from LiteRT in Python; the Java core's JUnit test must reproduce them;
  5. with --build and an Android SDK here: ./gradlew :app:assembleDebug, then adb install -r.
     Without an SDK it prints the commands to run on a machine that has one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.errors import EdgekdError
from pipeline.rundir import atomic_write_bytes, sha256_file

MODEL_SCHEMA = "edgekd.model/1"
GOLDEN_SCHEMA = "edgekd.golden/1"
PRECISIONS = ("int8", "fp16", "fp32")
ASSETS = Path("app/src/main/assets")
GOLDEN = Path("core/src/test/resources/golden")
APK = "app/build/outputs/apk/debug/app-debug.apk"
GRADLE_TASK = ":app:assembleDebug"
TOP_K = 3
DEFAULT_APP = "android_demo"


class BuildUnavailable(EdgekdError):
    """--build was asked where no Android SDK is found; `instructions` says what to run elsewhere."""

    def __init__(self, msg: str, instructions: list[str]):
        super().__init__(msg)
        self.instructions = instructions


# -- hashing and atomic copies ------------------------------------------------------------------

def _atomic_copy(src: Path, dst: Path, sha256: str) -> None:
    """Copy through a temp file beside dst, hash what was written, rename only if it matches."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise EdgekdError(f"sha256 mismatch while copying {src} to {dst}: "
                              f"expected {sha256[:12]}, wrote {h.hexdigest()[:12]}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary project files
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- choosing and checking the artifact ---------------------------------------------------------

def _parity_ok(parity: Any) -> tuple[bool, str]:
    """(passed, why). Accepts {"status": "ok"|"pass"|"passed"} or {"passed": true} / {"ok": true}."""
    if not isinstance(parity, dict) or not parity:
        return False, "parity was not checked"
    if "status" in parity:
        status = str(parity["status"]).lower()
        return status in ("ok", "pass", "passed"), f"parity status is {parity['status']!r}"
    for key in ("passed", "ok"):
        if key in parity:
            return bool(parity[key]), f"parity {key}={parity[key]!r}"
    return False, "parity has no status (unchecked)"


def select_artifact(run_dir: Path, precision: str) -> dict:
    """The manifest entry of the tflite artifact with this precision, or a one-line error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekdError(f"run directory not found: {run_dir}")
    manifest_path = run_dir / "exports" / "manifest.json"
    if not manifest_path.is_file():
        raise EdgekdError(f"no exports manifest at {manifest_path}: export the student first (edgekd export)")
    try:
        artifacts = json.loads(manifest_path.read_text())["artifacts"]
    except (ValueError, KeyError, TypeError) as e:
        raise EdgekdError(f"{manifest_path} is not a valid exports manifest: {e}") from None
    tflite = [a for a in artifacts if a.get("format") == "tflite"]
    matches = [a for a in tflite if a.get("precision") == precision]
    if not matches:
        have = ", ".join(f"{a.get('name')} ({a.get('precision')}, {a.get('status')})" for a in tflite) or "none"
        raise EdgekdError(f"no tflite artifact with precision {precision} in {manifest_path}; tflite artifacts: {have}")
    ok = [a for a in matches if a.get("status") == "ok"]
    art = (ok or matches)[0]
    if art.get("status") != "ok":
        reason = f": {art['reason']}" if art.get("reason") else ""
        raise EdgekdError(f"artifact {art.get('name')} has status {art.get('status')}{reason}; nothing to install")
    passed, why = _parity_ok(art.get("parity"))
    if not passed:
        raise EdgekdError(f"artifact {art.get('name')} did not pass parity ({why}); refusing to ship it")
    return art


def _read_model_json(path: Path) -> dict:
    if not path.is_file():
        raise EdgekdError(f"model.json missing next to the model: {path}")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise EdgekdError(f"{path} is not valid JSON: {e}") from None
    if meta.get("schema") != MODEL_SCHEMA:
        raise EdgekdError(f"{path}: schema is {meta.get('schema')!r}, expected {MODEL_SCHEMA!r}")
    for key in ("sha256", "labels", "num_classes", "input", "output", "file"):
        if key not in meta:
            raise EdgekdError(f"{path}: missing key {key!r}")
    inp = meta["input"]
    for key in ("layout", "height", "width", "channels", "dtype", "mean", "std"):
        if key not in inp:
            raise EdgekdError(f"{path}: missing key input.{key}")
    if inp["layout"] not in ("NHWC", "NCHW"):
        raise EdgekdError(f"{path}: input.layout {inp['layout']!r} is not NHWC or NCHW")
    if inp.get("resize", "bilinear_half_pixel") != "bilinear_half_pixel":
        raise EdgekdError(f"{path}: resize {inp['resize']!r} is not implemented by the app (bilinear_half_pixel)")
    if not re.fullmatch(r"[\w.-]+\.tflite", str(meta["file"])):
        raise EdgekdError(f"{path}: file {meta['file']!r} is not a plain .tflite file name")
    if len(meta["labels"]) != meta["num_classes"]:
        raise EdgekdError(f"{path}: {len(meta['labels'])} labels but num_classes is {meta['num_classes']}")
    return meta


def _interpreter(model_path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path), num_threads=1)
    interp.allocate_tensors()
    return interp


def expected_input_shape(meta: dict) -> list[int]:
    i = meta["input"]
    if i["layout"] == "NCHW":
        return [1, i["channels"], i["height"], i["width"]]
    return [1, i["height"], i["width"], i["channels"]]


def check_bundle(model_path: Path, expected_sha: Optional[str] = None) -> dict:
    """Checks model.tflite + model.json + labels.txt in one folder; returns model.json.

    Hash (manifest and model.json), labels, and the interpreter's tensors against model.json."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EdgekdError(f"model file not found: {model_path}")
    actual = sha256_file(model_path)
    if expected_sha and actual != expected_sha:
        raise EdgekdError(f"sha256 mismatch for {model_path}: manifest says {expected_sha[:12]}, file has {actual[:12]}")
    meta = _read_model_json(model_path.parent / "model.json")
    if meta["sha256"] != actual:
        raise EdgekdError(f"sha256 mismatch for {model_path}: model.json says {meta['sha256'][:12]}, file has {actual[:12]}")
    labels_path = model_path.parent / "labels.txt"
    if not labels_path.is_file():
        raise EdgekdError(f"labels.txt missing next to the model: {labels_path}")
    labels = [line.strip() for line in labels_path.read_text().splitlines() if line.strip()]
    if labels != list(meta["labels"]):
        raise EdgekdError(f"{labels_path} does not match model.json labels ({len(labels)} vs {len(meta['labels'])} lines)")
    interp = _interpreter(model_path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if list(inp["shape"]) != expected_input_shape(meta):
        raise EdgekdError(f"{model_path}: input shape {list(inp['shape'])} does not match model.json "
                          f"{meta['input']['layout']} {expected_input_shape(meta)}")
    if np.dtype(inp["dtype"]).name != meta["input"]["dtype"]:
        raise EdgekdError(f"{model_path}: input dtype {np.dtype(inp['dtype']).name} "
                          f"but model.json says {meta['input']['dtype']}")
    if int(np.prod(out["shape"])) != meta["num_classes"]:
        raise EdgekdError(f"{model_path}: {int(np.prod(out['shape']))} outputs "
                          f"but model.json has {meta['num_classes']} labels")
    return meta


# -- golden vectors -----------------------------------------------------------------------------

def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """TFLite's (and the Java core's) rounding; numpy's np.round rounds halves to even."""
    x = x.astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def synthetic_images(count: int, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Deterministic RGB uint8 images covering upsampling, downsampling, identity and grey input."""
    rng = np.random.default_rng(1234)
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # small colour noise: upsampling
            img = rng.integers(0, 256, size=(max(2, height // 3 + 1), max(2, width // 2 + 3), 3), dtype=np.uint8)
        elif kind == 1:  # larger smooth gradient + noise: downsampling, both axes different
            h, w = height * 2 + 7, width * 3 + 1
            yy, xx = np.mgrid[0:h, 0:w]
            img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=2).astype(np.int32)
            img = np.clip(img + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
        elif kind == 2:  # exactly the input size: resize must be the identity
            img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        else:  # grey stripes (replicated to 3 channels as the decoder does), tall and thin
            stripes = (np.arange(height * 3)[:, None] // 3 % 2) * 200
            g = (stripes + rng.integers(0, 50, size=(height * 3, max(2, width // 2)))).astype(np.uint8)
            img = np.repeat(g[..., None], 3, axis=2)
        out.append((f"synthetic-{i}", img))
    return out


def split_test_images(run_dir: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """Up to `count` images of the run's test split (data/split.json), classes taken in turn."""
    split_path = Path(run_dir) / "data" / "split.json"
    if count <= 0 or not split_path.is_file():
        return []
    try:
        items = [it for it in json.loads(split_path.read_text()).get("items", []) if it.get("split") == "test"]
    except ValueError:
        return []
    by_label: dict[Any, list[dict]] = {}
    for it in sorted(items, key=lambda it: str(it.get("key", it.get("path")))):
        by_label.setdefault(it.get("label"), []).append(it)
    queues = [by_label[k] for k in sorted(by_label, key=str)]
    picked: list[dict] = []
    while len(picked) < count and any(queues):
        for q in queues:
            if q and len(picked) < count:
                picked.append(q.pop(0))
    from pipeline.preprocess import load_rgb

    out = []
    for it in picked:
        p = Path(it["path"])
        if not p.is_absolute():
            p = Path(run_dir) / p
        try:
            out.append((f"test:{it.get('key', p.name)}", load_rgb(p)))
        except (OSError, ValueError):
            continue  # a moved or unreadable image only costs one golden vector
    return out


def reference_tensor(rgb: np.ndarray, meta: dict) -> np.ndarray:
    """The Python contract (pipeline.preprocess) with model.json's scale/mean/std and layout."""
    import torch

    from pipeline.preprocess import resize_rgb

    i = meta["input"]
    x = resize_rgb(rgb, i["height"], i["width"])  # 1x3xHxW float32 0..255, torch bilinear half-pixel
    m = torch.tensor(i["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(i["std"], dtype=torch.float32).view(1, 3, 1, 1)
    x = (x * float(i.get("scale", 1.0 / 255.0)) - m) / s
    if i["layout"] == "NHWC":
        x = x.permute(0, 2, 3, 1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def run_golden(model_path: Path, meta: dict, images: list[tuple[str, np.ndarray]], prefix: str) -> list[tuple[str, dict]]:
    """(file name, golden record) per image, from the model run in Python with LiteRT."""
    interp = _interpreter(model_path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    k = min(TOP_K, meta["num_classes"])
    records = []
    for n, (source, rgb) in enumerate(images):
        x = reference_tensor(rgb, meta)
        qin = None
        if np.dtype(inp["dtype"]) in (np.int8, np.uint8):
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            q = np.clip(_round_half_away(x / np.float32(scale)) + zp, info.min, info.max).astype(inp["dtype"])
            qin = {"scale": float(scale), "zero_point": int(zp), "dtype": np.dtype(inp["dtype"]).name, "q_b64": _b64(q)}
            interp.set_tensor(inp["index"], q)
        else:
            interp.set_tensor(inp["index"], x)
        interp.invoke()
        raw = np.array(interp.get_tensor(out["index"]))
        oq = None
        if np.dtype(raw.dtype) in (np.int8, np.uint8):
            scale, zp = out["quantization"]
            logits = (raw.astype(np.int32) - int(zp)).astype(np.float32) * np.float32(scale)
            oq = {"scale": float(scale), "zero_point": int(zp)}
        else:
            logits = raw.astype(np.float32)
        logits = logits.reshape(-1)
        if meta["output"].get("kind", "logits") == "logits":
            e = np.exp(logits.astype(np.float64) - logits.max())
            probs = e / e.sum()
        else:
            probs = logits.astype(np.float64)
        order = sorted(range(len(logits)), key=lambda j: (-float(logits[j]), j))[:k]
        name = f"{prefix}_{n:02d}.json"
        records.append((name, {
            "schema": GOLDEN_SCHEMA,
            "source": source,
            "model": meta,
            "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "rgb_b64": _b64(rgb.astype(np.uint8))},
            "input": {"shape": list(map(int, inp["shape"])), "float_b64": _b64(x.astype("<f4")), "quantization": qin},
            "output": {"shape": list(map(int, out["shape"])), "dtype": np.dtype(raw.dtype).name,
                       "raw_b64": _b64(raw.astype(raw.dtype.newbyteorder("<"))), "quantization": oq},
            "logits": [float(v) for v in logits],
            "probabilities": [float(v) for v in probs],
            "topk": [{"index": j, "label": meta["labels"][j], "score": float(probs[j])} for j in order],
        }))
    return records


def write_golden(model_path: Path, meta: dict, out_dir: Path, count: int, run_dir: Optional[Path] = None,
                 prefix: str = "golden") -> list[Path]:
    """Writes golden JSON files + index.txt into out_dir, removing golden files of earlier installs."""
    i = meta["input"]
    images = split_test_images(run_dir, count) if run_dir else []
    images += synthetic_images(count - len(images), i["height"], i["width"])
    records = run_golden(model_path, meta, images, prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rec in records:
        atomic_write_bytes(out_dir / name, (json.dumps(rec) + "\n").encode())
        written.append(out_dir / name)
    atomic_write_bytes(out_dir / "index.txt", "".join(f"{p.name}\n" for p in written).encode())
    keep = {p.name for p in written} | {"index.txt"}
    for stale in out_dir.glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    return written


# -- build and install --------------------------------------------------------------------------

def _find_adb() -> Optional[str]:
    found = shutil.which("adb")
    if found:
        return found
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        root = os.environ.get(var)
        if root and (Path(root) / "platform-tools" / "adb").is_file():
            return str(Path(root) / "platform-tools" / "adb")
    return None


def sdk_available() -> bool:
    """An Android SDK is usable here: ANDROID_HOME/ANDROID_SDK_ROOT points at a folder, or adb is on PATH."""
    return any(os.environ.get(v) and Path(os.environ[v]).is_dir() for v in ("ANDROID_HOME", "ANDROID_SDK_ROOT")) \
        or _find_adb() is not None


def build_instructions(app: Path, device: Optional[str]) -> list[str]:
    serial = f"-s {device} " if device else ""
    return [
        "To build and install the app, on a machine with the Android SDK (ANDROID_HOME set, adb on PATH)",
        "and the tablet connected over USB with USB debugging on, run:",
        f"  cd {app}",
        f"  ./gradlew {GRADLE_TASK}",
        f"  adb {serial}install -r {APK}",
        "(If gradle/wrapper/gradle-wrapper.jar is missing, run `gradle wrapper` once or open the project in",
        "Android Studio, which creates it. Or copy the app folder there and run `edgekd android install RUN_DIR --build`.)",
    ]


def _build_and_install(app: Path, device: Optional[str]) -> dict:
    gradlew = app / "gradlew"
    if not gradlew.is_file():
        raise EdgekdError(f"no gradle wrapper at {gradlew}: the app folder is incomplete")
    # a checkout or copy can lose the executable bit: run the script through sh then
    exe = [str(gradlew.resolve())] if os.access(gradlew, os.X_OK) else ["sh", str(gradlew.resolve())]
    r = subprocess.run([*exe, GRADLE_TASK], cwd=app)
    if r.returncode != 0:
        raise EdgekdError(f"./gradlew {GRADLE_TASK} failed with exit code {r.returncode} (in {app}); see its output above")
    apk = app / APK
    if not apk.is_file():
        raise EdgekdError(f"the build succeeded but {apk} is missing")
    adb = _find_adb()
    if adb is None:
        raise EdgekdError(f"built {apk}, but adb was not found (put platform-tools on PATH) to install it")
    cmd = [adb, *(["-s", device] if device else []), "install", "-r", APK]
    r = subprocess.run(cmd, cwd=app)
    if r.returncode != 0:
        raise EdgekdError(f"adb install failed with exit code {r.returncode}: "
                          "is the device connected and authorised (adb devices)?")
    return {"apk": str(apk), "adb": adb}


# -- the command --------------------------------------------------------------------------------

def install(run_dir: Path, app: Path, precision: str = "int8", build: bool = False, device: Optional[str] = None,
            golden_count: int = 4) -> dict:
    """Copy the exported model into the app, write golden vectors, optionally build and install.

    Returns what was done; raises EdgekdError (one line) on any problem, BuildUnavailable when
    build=True but no Android SDK is found (after copying: the instructions say what to run)."""
    run_dir, app = Path(run_dir), Path(app)
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    art = select_artifact(run_dir, precision)
    if not (app.is_dir() and (app / "settings.gradle.kts").is_file() and (app / "app").is_dir()):
        raise EdgekdError(f"Android app not found at {app} (expected settings.gradle.kts and app/): pass --app")
    model_path = run_dir / art["path"]
    meta = check_bundle(model_path, art.get("sha256"))

    assets = app / ASSETS
    model_name = meta.get("file", "model.tflite")
    _atomic_copy(model_path, assets / model_name, meta["sha256"])
    for extra in ("labels.txt", "model.json"):  # model.json last: it names the hash the app expects
        src = model_path.parent / extra
        _atomic_copy(src, assets / extra, sha256_file(src))

    golden = write_golden(assets / model_name, meta, app / GOLDEN, golden_count, run_dir, prefix=art.get("name", "golden"))
    result: dict[str, Any] = {
        "artifact": art.get("name"), "precision": precision, "sha256": meta["sha256"],
        "size_bytes": (assets / model_name).stat().st_size,
        "assets": [str(assets / n) for n in (model_name, "labels.txt", "model.json")],
        "golden": [str(p) for p in golden],
        "built": False, "installed": False, "instructions": [],
    }
    if not build:
        result["instructions"] = build_instructions(app, device)
        return result
    if not sdk_available():
        raise BuildUnavailable("--build asked, but no Android SDK here (no ANDROID_HOME/ANDROID_SDK_ROOT, no adb on "
                               "PATH); the model was copied: run the commands above on a machine with the SDK",
                               build_instructions(app, device))
    result.update(_build_and_install(app, device), built=True, installed=True)
    return result


def _default_app() -> Path:
    """`android_demo` in the working directory, else the one beside this package (a source checkout)."""
    here = Path(DEFAULT_APP)
    if here.is_dir():
        return here
    beside = Path(__file__).resolve().parent.parent / DEFAULT_APP
    return beside if beside.is_dir() else here


def _cmd_install(args: argparse.Namespace) -> int:
    app = Path(args.app) if args.app else _default_app()
    try:
        r = install(Path(args.run_dir), app, precision=args.precision, build=args.build, device=args.device,
                    golden_count=args.golden_count)
    except BuildUnavailable as e:
        print("\n".join(e.instructions))
        raise
    size = r["size_bytes"]
    size_text = f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    print(f"installed {r['artifact']} ({r['precision']}, sha256 {r['sha256'][:12]}, {size_text}) "
          f"into {app / ASSETS}")
    print(f"golden vectors: {len(r['golden'])} in {app / GOLDEN}")
    if r["installed"]:
        print(f"built and installed {r['apk']}")
    else:
        print("\n".join(r["instructions"]))
    return 0


def register(subparsers) -> None:
    """Adds `android install` to an argparse subparsers object (func=callable(args) -> exit code)."""
    p = subparsers.add_parser("android", help="the Android demo app (android_demo/)",
                              description="Install an exported student into the Android demo app.")
    sub = p.add_subparsers(dest="android_command", metavar="COMMAND")
    sub.required = True
    i = sub.add_parser("install", help="copy a TFLite export into the app's assets (and build/install it)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding exports/manifest.json")
    i.add_argument("--app", default=None, help=f"Android project folder (default: {DEFAULT_APP})")
    i.add_argument("--precision", choices=PRECISIONS, default="int8", help="which TFLite artifact (default: int8)")
    i.add_argument("--build", action="store_true", help="build the debug APK and adb-install it (needs an Android SDK)")
    i.add_argument("--device", default=None, metavar="SERIAL", help="adb device serial (adb -s)")
    i.add_argument("--golden-count", type=int, default=4, help="golden test vectors to write (default: 4)")
    i.set_defaults(func=_cmd_install)


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m pipeline.android install ...` (the same command without the edgekd CLI)."""
    parser = argparse.ArgumentParser(prog="edgekd")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["android", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args)
    except EdgekdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
