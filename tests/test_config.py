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


@pytest.mark.parametrize(("entries", "message"), [
    ([{"name": "x", "colour": "red"}], r"^backbone entry \{'name': 'x', 'colour': 'red'\}: unknown key\(s\) colour; "
                                       r"valid keys are name, weights, pretrained, layer, input_size, seed, label$"),
    (["raw-pixels", {"name": "raw-pixels", "input_size": 16}],
     r"^two backbones would be filed as 'raw-pixels' \('raw-pixels' and 'raw-pixels'\): give one a label"),
    ([{"name": "random:resnet18", "label": "resnet18"}],
     r"^backbone 'random:resnet18' has random weights but would be filed as 'resnet18': start its label with "
     r"'random:' \(e.g. 'random:resnet18'\)$"),
])
def test_backbone_entries_are_refused_with_one_line(entries, message):
    with pytest.raises(ConfigError, match=message) as info:
        backbone_specs(load_config(EvalConfig, backbones=entries, tasks=["t"]))
    assert "\n" not in str(info.value)


def test_random_backbones_keep_their_prefix_in_every_display_name():
    cfg = load_config(EvalConfig, backbones=["random:resnet18", {"name": "random:resnet18", "layer": "stage2"},
                                             {"name": "random:resnet18", "seed": 1, "label": "random:resnet18-s1"}],
                      tasks=["t"])
    assert [s.display_name for s in backbone_specs(cfg)] == ["random:resnet18", "random:resnet18@stage2",
                                                            "random:resnet18-s1"]


def test_the_random_prefix_is_the_backbone_registrys():
    from unirep.backbones.baselines import RANDOM_PREFIX as REGISTRY_PREFIX
    from unirep.config import RANDOM_PREFIX

    assert RANDOM_PREFIX == REGISTRY_PREFIX == "random:"
