"""Selection on val, refit, freezing and the sealed test split, on real digits with a tiny timm network."""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from unirep.backbones import create_backbone
from unirep.errors import ConfigError, DataError
from unirep.finetune.data import AugmentedImages, cached_dataset, train_transform
from unirep.finetune.modes import create_phases
from unirep.finetune.module import Classifier
from unirep.finetune.probe_head import frozen_features, linear_probe_head
from unirep.finetune.protocol import FineTuneProtocol
from unirep.finetune.select import finetune, fit_phase
from unirep.finetune.stages import partition_stages
from unirep.metrics import Metric
from unirep.probes import create_probe
from unirep.protocols import SealedImages, TaskImages, create_protocol
from unirep.tasks.base import ImageSet
from unirep.training.data import cache_split


def tiny_backbone():
    return create_backbone("random:test_resnet", input_size=32)


def val_curves(curve: list[dict], phase: str) -> dict[float, list[float]]:
    curves = defaultdict(list)
    for entry in curve:
        if entry["phase"] == phase and entry["stage"] == "select":
            curves[entry["candidate_lr"]].append(entry["val_score"])
    return dict(curves)


def independent_val_accuracy(net: Classifier, images: ImageSet) -> float:
    """Top-1 of `net` on `images` through the plain eval transform, one image at a time, scored by sklearn."""
    transform = net.backbone.data_config.transform()
    batch = torch.stack([transform(images[i][0]) for i in range(len(images))])
    with torch.no_grad():
        predictions = net.eval()(batch).argmax(1).numpy()
    return 100.0 * accuracy_score(images.labels, predictions)


def backbone_state(net_or_backbone) -> dict[str, torch.Tensor]:
    backbone = getattr(net_or_backbone, "backbone", net_or_backbone)
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def test_selected_lr_and_epochs_are_the_argmax_of_val_and_the_kept_model_scores_it(tiny, digits):
    ft = tiny.config("finetune.max_epochs=3", "finetune.refit=train").finetune
    backbone = tiny_backbone()
    before = backbone_state(backbone)
    result = finetune(backbone, digits.train, digits.val, digits.num_classes, Metric.TOP1, ft, seed=0)
    curves = val_curves(result.curve, "finetune")
    assert list(curves) == [0.2, 0.05]
    assert curves[0.2] != curves[0.05]  # the candidates really differ, so the choice below means something
    best = {lr: max(scores) for lr, scores in curves.items()}
    expected_lr = max(best, key=best.get)  # max() keeps the first of equal values: ties go to the first listed
    (choice,) = result.choices
    assert choice.lr == expected_lr
    assert choice.epochs == int(np.argmax(curves[expected_lr])) + 1
    assert choice.val_score == best[expected_lr] == result.choices[-1].sweep[f"{expected_lr:g}"]
    for scores in curves.values():  # early stopping: no more than `patience` epochs after the best one
        assert len(scores) <= min(3, int(np.argmax(scores)) + 1 + 1)
    # refit=train keeps the weights of the selected epoch: an independent forward pass reproduces its val score.
    assert independent_val_accuracy(result.net, digits.val) == pytest.approx(choice.val_score, abs=1e-9)
    for key, value in backbone_state(backbone).items():  # the caller's backbone is never trained in place
        assert torch.equal(value, before[key]), key


def test_last_k_trains_only_the_last_stages_batch_norm_statistics_included(tiny, digits):
    ft = tiny.config("finetune.mode=last-k", "finetune.last_k=1", "finetune.lrs=[0.2]",
                     "finetune.max_epochs=1").finetune  # refit=train+val: the returned model is the refit's
    backbone = tiny_backbone()
    before = backbone_state(backbone)
    result = finetune(backbone, digits.train, digits.val, digits.num_classes, Metric.TOP1, ft, seed=0)
    after = backbone_state(result.net)
    assert result.choices[0].trained_stages == ["layer4"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layer4.") for k in changed)
    assert "model.layer4.0.bn1.running_mean" in changed  # the trained stage's batch norm does update
    assert {"model.layer4.0.conv1.weight", "model.layer4.0.conv2.weight"} <= changed


def test_lp_ft_sgd_head_phase_leaves_the_backbone_untouched(tiny, digits):
    ft = tiny.config("finetune.mode=lp-ft", "finetune.lp_head=sgd", "finetune.lp_lrs=[0.5]",
                     "finetune.lp_max_epochs=1").finetune
    backbone = tiny_backbone()
    head_phase, ft_phase = create_phases(ft)
    assert (head_phase.name, head_phase.last_k, ft_phase.last_k) == ("head", 0, None)
    net = Classifier(copy.deepcopy(backbone), digits.num_classes, seed=0)
    head_before = copy.deepcopy(net.head.state_dict())
    train_set = AugmentedImages(digits.train, train_transform(backbone.data_config, ft))
    val_set = cached_dataset(cache_split(digits.val, backbone.data_config, "val"))
    fit_phase(net, partition_stages(backbone), head_phase, 0.5, 1, train_set, val_set, Metric.TOP1, ft, seed=0)
    for key, value in backbone_state(backbone).items():  # parameters and running statistics alike
        assert torch.equal(backbone_state(net)[key], value), key
    assert not torch.equal(net.head.weight, head_before["weight"])


def test_lp_ft_probe_head_is_unirep_linear_probe_folded_into_the_head(digits):
    backbone = tiny_backbone()
    net = Classifier(copy.deepcopy(backbone), digits.num_classes, seed=0)
    C, val_score = linear_probe_head(net, digits.train, digits.val, Metric.TOP1, C=None)
    for key, value in backbone_state(backbone).items():
        assert torch.equal(backbone_state(net)[key], value), key
    # Independently: the probe with that C on the same frozen features, its standardisation floored at a tenth of
    # the median non-constant column's spread (written out here), gives the head's logits.
    train, val = (frozen_features(net, images, "cpu") for images in (digits.train, digits.val))
    probe = create_probe("linear", C=C).fit(train.X, train.y)
    scale = probe.scale_.astype(np.float64)
    floor = 0.1 * np.median(scale[scale != 1.0])
    weight = probe.coef_ / np.maximum(scale, floor)[None, :]
    expected = val.X @ weight.T + (probe.intercept_ - weight @ probe.mean_)
    with torch.no_grad():
        logits = net.eval().head(torch.as_tensor(val.X)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    if (scale >= floor).all():  # nothing floored: exactly the probe's own scores
        np.testing.assert_allclose(logits, probe.decision_scores(val.X), rtol=1e-4, atol=1e-4)
    assert abs(100.0 * accuracy_score(val.y, logits.argmax(1)) - val_score) <= 3 * 100.0 / len(val.y)


def test_the_folded_head_floors_near_constant_columns():
    """A column non-zero on one image of 200 (a near-dead unit) gets an ordinary weight in the standardised probe;
    folded exactly, 1/scale would multiply it by ~1/0.007; floored, its weight stays at the other columns' size."""
    from unirep.finetune.probe_head import SCALE_FLOOR, floored_scale, load_head

    rng = np.random.default_rng(0)
    scale = np.concatenate([rng.uniform(0.5, 2.0, 31), [0.007], [1.0]])  # the last: a constant column
    coef = rng.normal(size=(3, 33))
    head = torch.nn.Linear(33, 3)
    load_head(head, coef, np.zeros(3), np.zeros(33), scale, np.arange(3))
    floor = SCALE_FLOOR * np.median(scale[:32])
    floored = floored_scale(scale)
    assert floored[31] == pytest.approx(floor) and floored[:31].tolist() == scale[:31].tolist() and floored[32] == 1.0
    np.testing.assert_allclose(head.weight.detach().numpy()[:, 31], coef[:, 31] / floor, rtol=1e-6)
    np.testing.assert_allclose(head.weight.detach().numpy()[:, :31], coef[:, :31] / scale[None, :31], rtol=1e-6)


def test_lp_ft_fine_tunes_everything_from_the_probe_head(tiny, digits):
    ft = tiny.config("finetune.mode=lp-ft", "finetune.lrs=[2.0]", "finetune.max_epochs=1",
                     "finetune.refit=train").finetune
    backbone = tiny_backbone()
    result = finetune(backbone, digits.train, digits.val, digits.num_classes, Metric.TOP1, ft, seed=0)
    probe_choice, ft_choice = result.choices
    assert (probe_choice.phase, ft_choice.phase, ft_choice.lr) == ("linear-probe", "finetune", 0.2)  # 2.0 x 0.1
    assert probe_choice.C > 0 and [e["phase"] for e in result.curve] == ["linear-probe", "finetune"]
    after, before = backbone_state(result.net), backbone_state(backbone)
    assert not torch.equal(after["model.conv1.0.weight"], before["model.conv1.0.weight"])  # the stem trained too
    assert not torch.equal(after["model.bn1.weight"], before["model.bn1.weight"])  # batch-norm affine trains...
    for key in (k for k in before if k.endswith(("running_mean", "running_var"))):  # ...its statistics stay
        assert torch.equal(after[key], before[key]), key


def permuted(images: ImageSet, seed: int) -> ImageSet:
    order = np.random.default_rng(seed).permutation(len(images))
    return ImageSet(images.ids, images.labels[order], lambda i: images[i][0])


def test_test_labels_never_reach_selection(tiny, digits):
    protocol = FineTuneProtocol(tiny.config())
    outcomes = []
    for test in (digits.test, permuted(digits.test, seed=1)):
        data = TaskImages(digits.train, digits.val, SealedImages(test), tiny_backbone(), digits.num_classes)
        outcomes.append(protocol.run(data, Metric.TOP1, seed=0))
    real, shuffled = outcomes
    assert real.hyperparameters == shuffled.hyperparameters
    assert real.val_score == shuffled.val_score and real.extra["curve"] == shuffled.extra["curve"]
    assert real.test_predictions == shuffled.test_predictions  # the same model, whatever the test labels
    assert real.test_labels != shuffled.test_labels
    for outcome in outcomes:
        expected = 100.0 * np.mean(np.array(outcome.test_predictions) == np.array(outcome.test_labels))
        assert outcome.score == pytest.approx(expected)


def test_sealed_images_hide_labels_and_score_once(digits):
    seen = []

    def predict(images: ImageSet) -> np.ndarray:
        seen.append(images.labels.copy())
        return np.eye(10)[np.zeros(len(images), dtype=int)]  # always class 0

    sealed = SealedImages(digits.test)
    outcome = sealed.evaluate(predict, Metric.TOP1)
    assert (seen[0] == -1).all() and len(seen[0]) == len(digits.test)
    assert outcome.score == pytest.approx(100.0 * np.mean(digits.test.labels == 0))
    with pytest.raises(RuntimeError, match="already scored once"):
        sealed.evaluate(predict, Metric.TOP1)


def test_protocol_names_choose_the_mode(tiny):
    cfg = tiny.config("finetune.last_k=3")
    assert create_protocol("finetune", cfg).settings().mode == "full"
    assert create_protocol("finetune-lp-ft", cfg).settings().mode == "lp-ft"
    assert (create_protocol("finetune-last-k", cfg).settings().last_k, create_protocol("finetune-last-2", cfg)
            .settings().last_k) == (3, 2)
    assert create_protocol("finetune-last-2", cfg).needs_images


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["finetune.refit=test"], ConfigError, "finetune.refit='test' must be one of"),
    (["finetune.optimizer=lion"], ConfigError, "finetune.optimizer='lion' is not one of"),
    (["finetune.mode=last-k", "finetune.last_k=9"], ConfigError, "has 5 stages"),
])
def test_bad_settings_fail_before_training(tiny, digits, overrides, error, message):
    with pytest.raises(error, match=message):
        finetune(tiny_backbone(), digits.train, digits.val, 10, Metric.TOP1, tiny.config(*overrides).finetune, 0)


def test_bad_inputs_raise_one_clear_error(tiny, digits):
    with pytest.raises(DataError, match="labels must lie in 0..4"):
        finetune(tiny_backbone(), digits.train, digits.val, 5, Metric.TOP1, tiny.config().finetune, 0)
    data = TaskImages(digits.train, digits.val, SealedImages(digits.test), tiny_backbone(), 10)
    with pytest.raises(ConfigError, match="use the linear probe"):
        FineTuneProtocol(tiny.config()).run(data, Metric.MAP, seed=0)
