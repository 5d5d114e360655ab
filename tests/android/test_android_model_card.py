"""`edgekd android install` puts the run's model card into the app's assets (the "About this model" screen
reads model_card.json); an install from a run without one removes an older card."""

from __future__ import annotations

import json

from edgekd.android.install import ASSETS, install


def test_install_copies_the_model_card_and_removes_a_stale_one(run_copy, app_copy):
    manifest = json.loads((run_copy / "exports/manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "tflite" and a["precision"] == "int8")
    folder = (run_copy / art["path"]).parent
    card = {"schema": "edgekd.model_card/1", "summary": {"title": "t", "lines": ["a"], "by_artifact_sha256": {}}}
    (folder / "model_card.json").write_text(json.dumps(card))
    (run_copy / "MODEL_CARD.md").write_text("# Model card: t\n")  # beside the run when not beside the model
    r = install(run_copy, app_copy, precision="int8", golden_count=1)
    assets = app_copy / ASSETS
    assert json.loads((assets / "model_card.json").read_text()) == card
    assert (assets / "MODEL_CARD.md").read_text() == "# Model card: t\n"
    assert {str(assets / "model_card.json"), str(assets / "MODEL_CARD.md")} <= set(r["assets"])
    (folder / "model_card.json").unlink()
    (run_copy / "MODEL_CARD.md").unlink()
    install(run_copy, app_copy, precision="int8", golden_count=1)
    assert not (assets / "model_card.json").exists() and not (assets / "MODEL_CARD.md").exists()
