"""The ablation runner: rows share what their fingerprints allow, and the table shows every row's verdict."""

from __future__ import annotations

import json

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
                "student": {"accuracy": 0.72, "accuracy_std": 0.01, "macro_f1": 0.5},
                "baseline": {"accuracy": 0.70, "accuracy_std": 0.02, "macro_f1": 0.4},
                "kd_verdict": {"kd_gain_mean": gain, "kd_gain_ci95": [gain - 1, gain + 1], "mcnemar_p": 0.2},
            }
        )
    doc = {"command": "c", "base_command": "b", "date": "d", "machine": "m", "preset": "quick", "seeds": 3}
    md = kd_ablation.render_markdown({**doc, "rows": rows})
    table = [ln for ln in md.splitlines() if ln.startswith("| fixed") or ln.startswith("| views8")]
    assert len(table) == 2
    assert "+2.2 [+1.2, +3.2]" in table[1] and "72.0 ± 1.0" in table[1]
    assert "`edgekd run --set x=views8`" in md
