"""export/manifest.py: the one reader/writer of exports/manifest.json and model.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.export import manifest as mf
from edgekd.pipeline.errors import EdgekdError


def _model_json(**changes) -> dict:
    meta = {
        "schema": mf.MODEL_SCHEMA,
        "file": "model.tflite",
        "sha256": "ab" * 32,
        "labels": ["a", "b"],
        "num_classes": 2,
        "output": {"kind": "logits", "num_classes": 2},
        "input": {
            "layout": "NHWC",
            "height": 8,
            "width": 8,
            "channels": 3,
            "dtype": "float32",
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "resize": "bilinear_half_pixel",
        },
    }
    for k, v in changes.items():
        if k.startswith("input_"):
            meta["input"][k[len("input_") :]] = v
        else:
            meta[k] = v
    return meta


def test_manifest_round_trip_and_filters(tmp_path):
    arts = [
        {"name": "onnx", "format": "onnx", "precision": "fp32", "status": "ok", "parity": {"status": "passed"}},
        {"name": "tflite-int8", "format": "tflite", "precision": "int8", "status": "failed", "parity": None},
        {"name": "tflite", "format": "tflite", "precision": "fp32", "status": "ok", "parity": {"passed": True}},
    ]
    mf.write_manifest(tmp_path, {"schema": mf.MANIFEST_SCHEMA, "artifacts": arts})
    assert mf.manifest_path(tmp_path) == tmp_path / "exports" / "manifest.json"
    m = mf.read_manifest(tmp_path)
    assert m["artifacts"] == arts
    assert [a["name"] for a in mf.artifacts(m, format="tflite")] == ["tflite-int8", "tflite"]
    assert [a["name"] for a in mf.artifacts(m, format="tflite", status="ok")] == ["tflite"]
    assert [a["name"] for a in mf.artifacts(m, precision="fp32")] == ["onnx", "tflite"]
    assert [mf.parity_passed(a)[0] for a in arts] == [True, False, True]
    assert mf.parity_passed(arts[1]) == (False, "parity was not checked")
    assert mf.parity_passed({"parity": {"status": "needs macOS"}}) == (False, "parity status is 'needs macOS'")
    assert not list((tmp_path / "exports").glob("*.tmp*"))


@pytest.mark.parametrize(
    "text,match",
    [
        (None, "no exports manifest at"),
        ("{not json", "is not a valid exports manifest"),
        ("[]", "is not a valid exports manifest: not a JSON object"),
        ('{"schema": "edgekd.exports/0", "artifacts": []}', "schema is 'edgekd.exports/0'"),
        ('{"schema": "edgekd.exports/1"}', "is not a valid exports manifest"),
        ('{"artifacts": [1]}', "'artifacts' is not a list of objects"),
    ],
)
def test_read_manifest_errors_are_one_line(tmp_path, text, match):
    if text is not None:
        (tmp_path / "exports").mkdir()
        mf.manifest_path(tmp_path).write_text(text)
    with pytest.raises(EdgekdError, match=match) as e:
        mf.read_manifest(tmp_path)
    assert "\n" not in str(e.value)


def test_model_json_round_trip(tmp_path):
    p = tmp_path / "model.json"
    mf.write_model_json(p, _model_json())
    assert mf.read_model_json(p) == _model_json()
    assert mf.read_model_json(p, suffix=".tflite")["file"] == "model.tflite"


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"schema": "edgekd.model/0"}, "schema is 'edgekd.model/0'"),
        ({"labels": ["a"]}, "1 labels but num_classes is 2"),
        ({"input_layout": "CHW"}, "is not NHWC or NCHW"),
        ({"input_resize": "nearest"}, "resize 'nearest' is not implemented"),
        ({"file": "../model.tflite"}, "is not a plain"),
        ({"file": "model.bin"}, "is not a plain"),
        ({"num_classes": 3}, "2 labels but num_classes is 3"),
    ],
)
def test_model_json_is_checked(tmp_path, changes, match):
    p = tmp_path / "model.json"
    p.write_text(json.dumps(_model_json(**changes)))
    with pytest.raises(EdgekdError, match=match):
        mf.read_model_json(p)


def test_model_json_missing_keys_and_files(tmp_path):
    p = tmp_path / "model.json"
    with pytest.raises(EdgekdError, match="model.json missing next to the model"):
        mf.read_model_json(p)
    p.write_text("{")
    with pytest.raises(EdgekdError, match="is not valid JSON"):
        mf.read_model_json(p)
    meta = _model_json()
    del meta["input"]["mean"]
    p.write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="missing key input.mean"):
        mf.read_model_json(p)
    meta = _model_json()
    del meta["labels"]
    p.write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="missing key 'labels'"):
        mf.read_model_json(p)
    p.write_text(json.dumps(_model_json(file="model.onnx")))
    assert mf.read_model_json(p)["file"] == "model.onnx"
    with pytest.raises(EdgekdError, match=r"is not a plain \.tflite file name"):
        mf.read_model_json(p, suffix=".tflite")


def test_schema_constants_live_only_in_manifest():
    """metadata.py writes MODEL_SCHEMA from here; no other module spells the schema strings."""
    from edgekd.export import metadata

    assert metadata.MODEL_SCHEMA is mf.MODEL_SCHEMA
    root = Path(mf.__file__).resolve().parents[1]
    for py in (
        list((root / "export").glob("*.py"))
        + list((root / "benchmarks").glob("*.py"))
        + list((root / "android_demo" / "installer").glob("*.py"))
    ):
        if py.name == "manifest.py":
            continue
        text = py.read_text()
        assert '"edgekd.model/1"' not in text and '"edgekd.exports/1"' not in text, py
