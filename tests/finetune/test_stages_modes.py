"""Stages (what last-k unfreezes) and modes (which phases run), without training."""

from __future__ import annotations

import pytest

from unirep.backbones import create_backbone
from unirep.errors import ConfigError, UnknownNameError
from unirep.finetune.modes import create_phases
from unirep.finetune.stages import partition_stages


@pytest.mark.parametrize("name", ["random:test_resnet", "random:test_efficientnet", "random:test_vit",
                                  "random:test_convnext"])
def test_stages_cover_every_parameter_once_in_forward_order(name):
    backbone = create_backbone(name, input_size=32)
    partition = partition_stages(backbone)
    model = backbone.model
    assert [s.name for s in partition.stages] == [info["module"] for info in model.feature_info]
    seen = [n for s in partition.stages for n in s.parameters] + list(partition.unused)
    assert sorted(seen) == sorted(n for n, _ in backbone.named_parameters())  # a partition: no gaps, no overlap
    classifier = model.pretrained_cfg["classifier"]
    assert sorted(partition.unused) == sorted(f"model.{classifier}.{p}" for p in ("weight", "bias"))
    # Forward order: every stage's parameters come after the previous stage's in registration order.
    order = {n: i for i, (n, _) in enumerate(backbone.named_parameters())}
    spans = [(min(order[n] for n in s.parameters), max(order[n] for n in s.parameters)) for s in partition.stages]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_resnet_stages_are_its_layers_with_the_stem_in_stage_zero():
    partition = partition_stages(create_backbone("random:test_resnet", input_size=32))
    names = {s.name: set(s.parameters) for s in partition.stages}
    params = [n for n, _ in create_backbone("random:test_resnet", input_size=32).named_parameters()]
    assert names["layer4"] == {n for n in params if n.startswith("model.layer4.")}
    assert names["act1"] == {n for n in params if n.startswith(("model.conv1.", "model.bn1."))}
    assert set(partition.trainable(1)) == names["layer4"]
    assert set(partition.trainable(2)) == names["layer3"] | names["layer4"]
    assert partition.trainable(0) == {} and len(partition.trainable(None)) == sum(map(len, names.values()))


def test_the_neck_after_the_last_stage_belongs_to_the_last_stage():
    partition = partition_stages(create_backbone("random:test_efficientnet", input_size=32))
    assert {"model.conv_head.weight", "model.bn2.weight"} <= set(partition.stages[-1].parameters)


def test_stages_after_a_chosen_layer_are_unused():
    backbone = create_backbone("random:test_resnet", input_size=32, layer="stage2")
    partition = partition_stages(backbone)
    assert [s.name for s in partition.stages] == ["act1", "layer1", "layer2"]
    assert all(n.startswith(("model.layer3.", "model.layer4.", "model.fc.")) for n in partition.unused)


def test_raw_pixels_cannot_be_fine_tuned():
    with pytest.raises(ConfigError, match="no trainable parameters"):
        partition_stages(create_backbone("raw-pixels"))


def test_modes_give_their_phases(tiny):
    full = create_phases(tiny.config("finetune.mode=full").finetune)
    assert [(p.name, p.last_k, p.lrs, p.max_epochs) for p in full] == [("finetune", None, (0.2, 0.05), 2)]
    last = create_phases(tiny.config("finetune.mode=last-k", "finetune.last_k=2").finetune)
    assert [(p.name, p.last_k) for p in last] == [("last-2", 2)]
    lpft = create_phases(tiny.config("finetune.mode=lp-ft", "finetune.lpft_lr_factor=0.1").finetune)
    assert [(p.name, p.last_k, p.lrs, p.solver) for p in lpft] == [("linear-probe", 0, (), "probe"),
                                                                    ("finetune", None, (0.02, 0.005), "sgd")]
    # bn_stats=auto: LP-FT keeps the statistics its head was fitted with; full fine-tuning updates them.
    assert lpft[1].freeze_bn_stats and not full[0].freeze_bn_stats
    assert create_phases(tiny.config("finetune.bn_stats=frozen").finetune)[0].freeze_bn_stats
    sgd = create_phases(tiny.config("finetune.mode=lp-ft", "finetune.lp_head=sgd", "finetune.lp_lrs=[0.5]",
                                    "finetune.lp_max_epochs=3").finetune)
    assert [(p.name, p.last_k, p.lrs, p.max_epochs, p.solver) for p in sgd] == [
        ("head", 0, (0.5,), 3, "sgd"), ("finetune", None, (0.02, 0.005), 2, "sgd")]


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["finetune.mode=half"], UnknownNameError, "unknown fine-tuning mode 'half'"),
    (["finetune.lrs=[]"], ConfigError, "non-empty list of positive"),
    (["finetune.lrs=[0.1,-1.0]"], ConfigError, "non-empty list of positive"),
    (["finetune.max_epochs=0"], ConfigError, "max_epochs and patience must be >= 1"),
    (["finetune.mode=lp-ft", "finetune.lpft_lr_factor=2.0"], ConfigError, "lower learning rate"),
    (["finetune.mode=last-k", "finetune.last_k=0"], ConfigError, "last_k=0 must be >= 1"),
    (["finetune.mode=lp-ft", "finetune.lp_head=svm"], ConfigError, "lp_head='svm' must be one of"),
    (["finetune.bn_stats=sometimes"], ConfigError, "bn_stats='sometimes' must be one of"),
])
def test_bad_mode_settings_raise_one_clear_error(tiny, overrides, error, message):
    with pytest.raises(error, match=message):
        create_phases(tiny.config(*overrides).finetune)
