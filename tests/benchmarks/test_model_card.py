"""The model card (benchmarks/model_card.py) on a synthetic report: sections, the data licence, limitations
from the figures, artifacts' per-class recall, and the copies beside the exports."""

from __future__ import annotations

import json
from pathlib import Path

from bench_fixtures import CLASSES

from edgekd.benchmarks.model_card import build_card, to_markdown, write_model_card
from edgekd.pipeline.config import load_config
from edgekd.pipeline.rundir import RunDir

SECTIONS = (
    "## Model details",
    "## Intended use",
    "## Out-of-scope use",
    "## Training and evaluation data",
    "## Metrics (test split)",
    "### Recall per class",
    "## Did distillation help? (KD verdict)",
    "## Shipped artifacts",
    "### How the int8 files were made",
    "## Known limitations",
    "## Reproduce",
)


def _prepare(root: Path, source: str = "elpv", **card) -> tuple[RunDir, object]:
    run = RunDir(root)
    rep = json.loads(run.report_json.read_text())
    rep["student"]["per_class_recall"] = dict(zip(CLASSES, [0.9, 0.2, 0.0, 0.85]))
    rep["data"] = {
        "source": source,
        "classes": CLASSES,
        "num_images": 400,
        "split_counts": {"train": dict.fromkeys(CLASSES, 70), "test": dict.fromkeys(CLASSES, 25)},
        "imbalance_ratio": 3.5,
        "majority_class_share_test": 0.4,
    }
    rep["kd_verdict"] = {
        "seeds": 1,
        "test_images": 100,
        "kd_gain_mean": 1.5,
        "kd_gain_ci95": [-0.3, 3.4],
        "mcnemar_p": 0.12,
        "conclusion": "no significant difference",
    }
    rep["exports"] = {"artifacts": [{"name": "tflite-int8", "int8_method": "post-training quantization only"}]}
    run.report_json.write_text(json.dumps(rep))
    cfg = load_config(None, "quick", {"data": {"source": source}, "card": card})
    run.save_config(cfg)
    art = run.root / "exports" / "tflite-int8"
    art.mkdir(parents=True)
    (art / "model.tflite").write_bytes(b"x")
    manifest = {
        "labels": CLASSES,
        "calibration_images": 64,
        "parity_images": 40,
        "artifacts": [
            {
                "name": "tflite-int8",
                "format": "tflite",
                "precision": "int8",
                "status": "ok",
                "path": "exports/tflite-int8/model.tflite",
                "sha256": "ab" * 32,
                "size_bytes": 1_830_000,
                "parity": {
                    "status": "passed",
                    "agreement": 0.973,
                    "accuracy": 0.71,
                    "images": 40,
                    "per_class_recall": [0.9, 0.1, 0.0, 0.85],
                },
            },
            {"name": "onnx-int8", "format": "onnx", "precision": "int8", "status": "failed", "path": None},
        ],
    }
    (run.root / "exports" / "manifest.json").write_text(json.dumps(manifest))
    return run, cfg


def test_card_sections_licence_and_limitations(synthetic_run):
    run, cfg = _prepare(synthetic_run)
    card = build_card(run, cfg)
    md = to_markdown(card)
    assert [s for s in SECTIONS if s not in md] == []
    assert card["training_data"]["license"].startswith("CC BY-NC-SA 4.0")
    assert any("Commercial use" in x for x in card["intended_use"]["out_of_scope"])
    lim = "\n".join(card["limitations"])
    assert "Class 'defect_1_3': the student recognises 20.0% of its 25 test images" in lim
    assert "Class 'defect_2_3': the student recognises 0.0%" in lim and "defect_0':" not in lim
    assert "tflite-int8: class 'defect_1_3' recall 10.0% (float student 20.0%)" in lim
    # shipped artifacts only: the failed one is neither in the tables nor in the app's summary
    assert [a["name"] for a in card["artifacts"]] == ["tflite-int8"] and "onnx-int8" not in md.split("## Reproduce")[0]
    assert card["artifacts"][0]["per_class_recall"] == dict(zip(CLASSES, [0.9, 0.1, 0.0, 0.85]))
    assert "| defect_1_3 | 80.0% | 20.0% | 80.0% | 10.0% |" in md
    assert card["summary"]["by_artifact_sha256"]["ab" * 32].startswith("This file (tflite-int8): accuracy 71.0%")


def test_an_image_folder_has_an_unknown_licence_unless_set(synthetic_run):
    run, cfg = _prepare(synthetic_run, source="/data/cells")
    card = build_card(run, cfg)
    assert card["training_data"]["license"] is None and "Licence: unknown" in to_markdown(card)
    assert not any("Commercial" in x for x in card["intended_use"]["out_of_scope"])
    cfg = load_config(None, "quick", {"data": {"source": "/data/cells"}, "card": {"data_license": "CC BY 4.0"}})
    card = build_card(run, cfg)
    assert card["training_data"]["license"] == "CC BY 4.0" and "- Licence: `CC BY 4.0`." in to_markdown(card)


def test_the_card_travels_with_the_exports(synthetic_run):
    run, cfg = _prepare(synthetic_run)
    md, js = write_model_card(run, cfg)
    for folder in (run.root / "exports", run.root / "exports" / "tflite-int8"):
        assert (folder / "MODEL_CARD.md").read_bytes() == md.read_bytes()
        assert (folder / "model_card.json").read_bytes() == js.read_bytes()
    assert json.loads(js.read_text())["schema"] == "edgekd.model_card/1"


def test_no_card_before_the_evaluate_stage(tmp_path):
    run = RunDir(tmp_path)
    run.report_json.write_text("{}")
    assert write_model_card(run, load_config(None, "quick")) is None
    assert not (tmp_path / "MODEL_CARD.md").exists()
