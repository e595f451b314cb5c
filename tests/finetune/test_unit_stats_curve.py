"""`finetune.unit_stats_images`: the unit-statistics callback of source training also runs while fine-tuning, and
each epoch's curve entry carries what it measured; the last refit epoch's numbers are those of the returned net."""

from __future__ import annotations

import pytest

from unirep.backbones import create_backbone
from unirep.finetune.select import finetune
from unirep.metrics import Metric
from unirep.training.data import cache_split
from unirep.training.unit_stats_callback import UnitStatsCallback


def test_unit_stats_join_every_epoch_of_the_fine_tuning_curve(tiny, digits):
    ft = tiny.config("finetune.lrs=[0.2]", "finetune.max_epochs=2", "finetune.unit_stats_images=24").finetune
    backbone = create_backbone("random:test_resnet", input_size=32)
    result = finetune(backbone, digits.train, digits.val, digits.num_classes, Metric.TOP1, ft, seed=0)
    assert result.curve and all("units/dead_share/all" in entry for entry in result.curve)
    assert all("units/first_layer_noise" in entry for entry in result.curve)
    assert {entry["stage"] for entry in result.curve} == {"select", "refit"}
    # An independent measurement of the returned network on the same 24 val images gives the last epoch's row.
    images = cache_split(digits.val, backbone.data_config, "val").images[:24]
    direct = UnitStatsCallback(images, transform=backbone.data_config.normalize_batch).measure(result.net.backbone)
    last = result.curve[-1]
    assert last["stage"] == "refit"
    for key, value in direct.items():
        assert last[key] == pytest.approx(value, abs=1e-9), key



def test_unit_stats_are_off_by_default(tiny):
    assert tiny.config().finetune.unit_stats_images == 0  # fine-tuning records change only when asked
