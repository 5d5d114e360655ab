import pytest

from edgekd.pipeline.config import load_config, parse_set
from edgekd.pipeline.errors import EdgekdError


def test_unknown_key_names_closest_valid_key():
    with pytest.raises(EdgekdError, match=r"unknown config key 'train.epoch'.*did you mean 'train.epochs'"):
        load_config(overrides=parse_set(["train.epoch=3"]))
    with pytest.raises(EdgekdError, match=r"'kd.temprature'.*'kd.temperature'"):
        load_config(overrides={"kd": {"temprature": 2}})


def test_unknown_section_and_bad_value():
    with pytest.raises(EdgekdError, match=r"did you mean 'teacher'"):
        load_config(overrides={"teacher2": {}})
    with pytest.raises(EdgekdError, match=r"kd.alpha"):
        load_config(overrides=parse_set(["kd.alpha=1.5"]))
    with pytest.raises(EdgekdError, match="unknown preset 'quik'; did you mean 'quick'"):
        load_config(preset="quik")


def test_precedence_preset_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: quick\ntrain:\n  epochs: 7\nkd:\n  alpha: 0.5\n")
    cfg = load_config(f, overrides=parse_set(["kd.alpha=0.25", "export.formats=[onnx]"]))
    assert cfg.preset == "quick"
    assert cfg.data.image_size == 96  # from the quick preset
    assert cfg.train.epochs == 7  # file beats preset
    assert cfg.kd.alpha == 0.25  # --set beats file
    assert cfg.export.formats == ["onnx"]
    assert load_config().kd.alpha == 0.9 and load_config().kd.temperature == 4.0


def test_feature_kd_needs_online_mode_and_bad_yaml(tmp_path):
    with pytest.raises(EdgekdError, match="kd.mode=online"):
        load_config(overrides=parse_set(["kd.feature.enabled=true"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(EdgekdError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(EdgekdError, match="key=value"):
        parse_set(["train.epochs"])
