"""`--seeds N` end to end on the tiny run: seeds 1..N-1 beside the shipped seed 0, the KD verdict in
report.json / report.md, the min_kd_gain gate, and what a second invocation reuses."""

import json
import shutil

import numpy as np
import pytest

from edgekd.cli import main
from edgekd.pipeline.rundir import RunDir


def test_one_seed_run_has_a_verdict(tiny_run):
    rep = json.loads((tiny_run / "report.json").read_text())
    v = rep["kd_verdict"]
    assert v["seeds"] == 1 and v["test_images"] == 12 and len(v["kd_gain_ci95"]) == 2
    assert v["kd_gain_mean"] == pytest.approx((rep["student"]["accuracy"] - rep["baseline"]["accuracy"]) * 100)
    assert v["kd_gain_ci95"][0] <= v["kd_gain_mean"] <= v["kd_gain_ci95"][1]
    assert rep["student"]["accuracy_std"] == 0.0 and len(rep["student"]["per_seed"]) == 1
    assert isinstance(rep["advice"], list)
    assert not (tiny_run / "seeds").exists()  # one seed: the layout of before


def test_seed_summary_is_mean_and_sample_std():
    from edgekd.pipeline.stages import seed_summary

    r = seed_summary(
        [{"accuracy": 0.5, "macro_f1": 0.4}, {"accuracy": 0.7, "macro_f1": 0.6}, {"accuracy": 0.9, "macro_f1": 0.5}]
    )
    assert r["accuracy"] == pytest.approx(0.7) and r["accuracy_std"] == pytest.approx(0.2)
    assert r["macro_f1"] == pytest.approx(0.5) and r["macro_f1_std"] == pytest.approx(0.1)
    assert seed_summary([{"accuracy": 0.5, "macro_f1": 0.4}])["accuracy_std"] == 0.0


def test_seeds_cli_sets_train_seeds(tiny_folder, tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--data", str(tiny_folder), "--out", str(out), "--stages", "data", "--seeds", "3"]) == 0
    assert RunDir(out).config().train.seeds == 3
    assert main(["run", "--data", str(tiny_folder), "--out", str(out), "--stages", "data", "--seeds", "0"]) == 2


def test_two_seeds_verdict_gate_and_reuse(tiny_run, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    run = RunDir(out)
    seed0 = json.loads((out / "report.json").read_text())["student"]["per_seed"][0]

    # adding a seed reuses seed 0 (its fingerprint does not depend on how many seeds there are)
    assert main(["distill", str(out), "--seeds", "2"]) == 0
    err = capfd.readouterr().err
    assert "student: up to date, skipped" in err and "baseline: up to date, skipped" in err
    assert "seeds/1/student: training" in err and "seeds/1/baseline: training" in err
    for kind in ("student", "baseline"):
        meta = json.loads((out / "seeds" / "1" / kind / "meta.json").read_text())
        assert meta["seed"] == run.config().train.seed + 1 and meta["seed_index"] == 1
    s0 = json.loads((out / "student" / "meta.json").read_text())
    s1 = json.loads((out / "seeds" / "1" / "student" / "meta.json").read_text())
    assert s0["sha256"] != s1["sha256"]  # another seed, another model

    assert main(["evaluate", str(out)]) == 0  # the saved config says 2 seeds now
    rep = json.loads((out / "report.json").read_text())
    v = rep["kd_verdict"]
    assert v["seeds"] == 2 and len(v["mcnemar_p_per_seed"]) == 2 and 0 <= v["mcnemar_p"] <= 1
    assert v["kd_gain_ci95"][0] <= v["kd_gain_mean"] <= v["kd_gain_ci95"][1]
    z = np.load(out / "eval" / "logits.npz")
    for kind in ("student", "baseline"):
        accs = [(z[key].argmax(1) == z["labels"]).mean() for key in (kind, f"{kind}_s1")]
        r = rep[kind]
        assert r["accuracy"] == pytest.approx(np.mean(accs)) and r["accuracy_std"] == pytest.approx(
            np.std(accs, ddof=1)
        )
        assert [p["accuracy"] for p in r["per_seed"]] == pytest.approx(accs)
        assert r["macro_f1"] == pytest.approx(np.mean([p["macro_f1"] for p in r["per_seed"]]))
        assert v[f"{kind}_accuracy"] == pytest.approx(accs)
    assert rep["student"]["per_seed"][0] == seed0  # seed 0 is the same model, evaluated the same
    assert rep["kd_gain_points"] == v["kd_gain_mean"]
    md = (out / "report.md").read_text()
    assert "## Did distillation help?" in md and "2 seeds" in md and v["conclusion"] in md
    assert "| class | teacher | student | baseline |" in md

    # a second evaluate with the same inputs (weights, test data, gates, seeds) is skipped and trains nothing
    # (issue 13: evaluate skips on a fingerprint of its inputs); a changed gate below evaluates again
    before = run.stages()
    capfd.readouterr()
    assert main(["evaluate", str(out)]) == 0
    err = capfd.readouterr().err
    after = run.stages()
    assert "training" not in err and "evaluate: up to date, skipped" in err
    for name in ("student", "baseline", "seeds/1/student", "seeds/1/baseline"):
        assert after[name] == before[name]
    assert json.loads((out / "report.json").read_text())["kd_verdict"] == v

    # the optional gate on the interval's lower bound: exit 3, the message names the interval
    assert main(["evaluate", str(out), "--set", "gate.min_kd_gain=100"]) == 3
    last = capfd.readouterr().err.strip().splitlines()[-1]
    lo, hi = v["kd_gain_ci95"]
    assert last.startswith("edgekd: gate failed: KD gain") and f"95% interval [{lo:+.2f}, {hi:+.2f}]" in last
    assert "gate.min_kd_gain=100" in last
    gates = {g["name"]: g for g in json.loads((out / "report.json").read_text())["gates"]}
    assert gates["min_kd_gain"]["passed"] is False and gates["max_accuracy_drop"]["passed"] is True

    # the collapse gate (on by default, off in the tiny fixture): no student beats chance by 80 points of 4 classes
    assert (
        main(["evaluate", str(out), "--set", "gate.min_kd_gain=null", "--set", "gate.min_margin_over_majority=80"]) == 3
    )
    assert "gate failed: student accuracy" in capfd.readouterr().err
    gates = {g["name"]: g for g in json.loads((out / "report.json").read_text())["gates"]}
    assert gates["student_above_majority"]["passed"] is False and "min_kd_gain" not in gates

    # evaluating more seeds than were trained names the command that trains them
    assert main(["evaluate", str(out), "--seeds", "3", "--set", "gate.min_kd_gain=null"]) == 2
    assert "edgekd distill" in capfd.readouterr().err
