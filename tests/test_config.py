import pytest
from omegaconf import OmegaConf

from unirep.config import BackboneSpec, EvalConfig, backbone_specs, load_config, save_config
from unirep.errors import ConfigError


def test_defaults_yaml_then_dotlist_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbones: [raw-pixels]\ntasks: [sklearn-digits]\nmax_input_size: 96\nlinear:\n  n_c: 10\n")
    cfg = load_config(EvalConfig, path, ["linear.n_c=5", "knn.temperature=0.1"], out=str(tmp_path / "o"))
    assert cfg.max_input_size == 96  # from YAML
    assert cfg.linear.n_c == 5  # dotlist wins over YAML
    assert cfg.linear.c_min_exp == -6.0  # default kept
    assert cfg.knn.temperature == 0.1 and cfg.out == str(tmp_path / "o")
    save_config(cfg, tmp_path / "resolved.yaml")
    assert OmegaConf.load(tmp_path / "resolved.yaml").linear.n_c == 5


def test_missing_required_and_type_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"missing required setting\(s\) \['backbones', 'tasks'\]"):
        load_config(EvalConfig)
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_config(EvalConfig, dotlist=["batch_size=lots"], backbones=["x"], tasks=["y"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EvalConfig, "nope.yaml")


def test_backbone_specs_from_names_and_mappings():
    cfg = load_config(EvalConfig, backbones=["resnet18", {"name": "raw-pixels", "input_size": 32},
                                             {"name": "resnet18", "layer": "stage2"}], tasks=["t"])
    specs = backbone_specs(cfg)
    assert specs[0] == BackboneSpec(name="resnet18")
    assert specs[1].input_size == 32 and specs[1].display_name == "raw-pixels"
    assert specs[2].display_name == "resnet18@stage2"
    bad = load_config(EvalConfig, backbones=[{"name": "x", "colour": "red"}], tasks=["t"])
    with pytest.raises(ConfigError, match="backbone entry"):
        backbone_specs(bad)
