"""The ablation runner: rows share what their fingerprints allow, and the table shows every row's verdict."""

from __future__ import annotations

import json

import pytest

from edgekd.benchmarks import kd_ablation
from edgekd.pipeline.config import load_config, parse_set


def test_every_row_is_a_valid_config_of_both_presets():
    for row in kd_ablation.ROWS.values():
        for preset in ("quick", "full"):
            load_config(None, preset, parse_set(list(row.sets)))  # raises on a typo


def test_trained_baselines_and_soft_labels_go_back_to_the_base_run(tmp_path):
    base, row = tmp_path / "base", tmp_path / "row"
    (base / "soft_labels").mkdir(parents=True)
    (base / "stages.json").write_text(json.dumps({"teacher": {"fingerprint": "t"}}))
    for name in ("baseline", "seeds/1/baseline", "student"):
        (row / name).mkdir(parents=True)
        (row / name / "model.safetensors").write_bytes(name.encode())
    (row / "soft_labels" / "abc").mkdir(parents=True)
    (row / "soft_labels" / "abc" / "chunk-0.safetensors").write_bytes(b"x")
    st = {n: {"fingerprint": f"fp-{n}"} for n in ("teacher", "baseline", "seeds/1/baseline", "student")}
    (row / "stages.json").write_text(json.dumps(st))
    kd_ablation._hand_back(row, base)
    got = json.loads((base / "stages.json").read_text())
    assert got["baseline"]["fingerprint"] == "fp-baseline" and "seeds/1/baseline" in got
    assert "student" not in got and not (base / "student").exists()  # students are what rows compare
    assert (base / "seeds/1/baseline/model.safetensors").read_bytes() == b"seeds/1/baseline"
    assert (base / "soft_labels" / "abc" / "chunk-0.safetensors").exists()
    assert got["teacher"]["fingerprint"] == "t"  # the base run's own teacher is kept


def test_markdown_has_one_row_per_change_with_its_verdict_and_command():
    rows = []
    for name, gain in (("fixed", 0.5), ("views8", 2.25)):
        rows.append(
            {
                "name": name,
                "change": kd_ablation.ROWS[name].change,
                "command": f"edgekd run --set x={name}",
                "exit_code": 0,
                "error": "",
                "wall_s": 60.0,
                "teacher": {"accuracy": 0.75},
                "student": {"accuracy": 0.72, "accuracy_std": 0.01, "macro_f1": 0.5, "agreement_teacher_train": 0.844},
                "baseline": {"accuracy": 0.70, "accuracy_std": 0.02, "macro_f1": 0.4},
                "kd_verdict": {"kd_gain_mean": gain, "kd_gain_ci95": [gain - 1, gain + 1], "mcnemar_p": 0.2},
            }
        )
    doc = {"command": "c", "base_command": "b", "date": "d", "machine": "m", "preset": "quick", "seeds": 3}
    md = kd_ablation.render_markdown({**doc, "rows": rows})
    table = [ln for ln in md.splitlines() if ln.startswith("| fixed") or ln.startswith("| views8")]
    assert len(table) == 2
    assert "+2.2 [+1.2, +3.2]" in table[1] and "72.0 ± 1.0" in table[1]
    assert "| 84.4 |" in table[1]  # the student's fit to its teacher on training images
    assert "`edgekd run --set x=views8`" in md


def test_a_collected_row_s_command_rebuilds_its_run_after_the_preset_changed(tmp_path, monkeypatch):
    import shlex

    import yaml

    from edgekd.pipeline import config as config_module

    run = tmp_path / "run"
    run.mkdir()
    made = load_config(None, "full", parse_set(["kd.alpha=auto", "train.crop_scale=[0.7,1.0]", "train.seeds=3"]))
    (run / "config.yaml").write_text(yaml.safe_dump(made.model_dump(mode="json"), sort_keys=False))
    (run / "stages.json").write_text(json.dumps({"student": {"seconds": 60.0}, "baseline": {"seconds": 30.0}}))
    # the preset moves on after the run: its student now trains for 77 epochs
    presets = {**config_module.PRESETS, "full": {**config_module.PRESETS["full"], "train": {"epochs": 77}}}
    monkeypatch.setattr(config_module, "PRESETS", presets)
    row = kd_ablation.collect(f"views8-auto={run}", "full", 3)
    assert row["wall_s"] == 90.0
    argv = shlex.split(row["command"])
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert f"train.epochs={made.train.epochs}" in sets and "kd.alpha=auto" in sets
    rebuilt = load_config(None, "full", {**parse_set(sets), "train": {**parse_set(sets)["train"], "seeds": 3}})
    assert rebuilt == made  # the command gives the run's config, not today's preset
    with pytest.raises(SystemExit, match="full preset, not --preset quick"):
        kd_ablation.collect(f"views8-auto={run}", "quick", 3)


def test_a_row_s_student_fit_is_the_mean_over_seeds():
    from edgekd.benchmarks.data_shapes import model_summary

    seeds = [{"accuracy": 0.70, "agreement_teacher_train": 0.80}, {"accuracy": 0.72, "agreement_teacher_train": 0.90}]
    rep = {"student": {"accuracy": 0.71, "agreement_teacher_train": 0.80, "per_seed": seeds}}  # top level: seed 0
    assert abs(model_summary(rep, "student")["agreement_teacher_train"] - 0.85) < 1e-12
    assert "agreement_teacher_train" not in model_summary({"student": {"accuracy": 0.7}}, "student")


def test_a_student_fit_of_zero_counts():
    from edgekd.benchmarks.data_shapes import model_summary

    seeds = [{"accuracy": 0.5, "agreement_teacher_train": 0.0}, {"accuracy": 0.5, "agreement_teacher_train": 1.0}]
    assert model_summary({"student": {"per_seed": seeds}}, "student")["agreement_teacher_train"] == 0.5
