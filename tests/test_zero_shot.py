"""The `zero-shot` protocol on a tiny random open_clip config loaded from a local .safetensors file: its predictions
are the argmax of cosine similarities computed directly with open_clip (same file, open_clip's own loader), its
record holds the templates and the logit scale, and the prompts' text embeddings are cached."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from omegaconf import OmegaConf

from unirep.backbones import create_backbone
from unirep.config import EvalConfig, load_config
from unirep.errors import ConfigError
from unirep.evaluate import evaluate
from unirep.features import extract_features
from unirep.probes import FeatureSplit, SealedSplit
from unirep.protocols import TaskFeatures, create_protocol
from unirep.tasks import create_task
from unirep.zero_shot import TEMPLATE_SETS, TextEmbeddingCache, resolve_templates, zero_shot_head

TINY = "unirep-test-clip-zero-shot"
TASK = "lfw-faces"  # 100 / 40 / 60 images: the cheapest real task


@pytest.fixture(scope="module")
def tiny(tiny_clip):
    config, weights = tiny_clip(TINY, seed=1, logit_scale=50.0)
    root = config.parent
    return root, config, weights, open_clip.create_model(TINY, pretrained=str(weights)).eval()


def direct_cosines(reference, backbone, images, class_names, templates) -> np.ndarray:
    """CLIP's zero-shot recipe written out with open_clip alone: unit prompt embeddings averaged per class,
    normalised again; cosine similarity with the unit image embedding."""
    tokenizer = open_clip.get_tokenizer(TINY)
    x = torch.stack([backbone.data_config.transform()(images[i][0]) for i in range(len(images))])
    with torch.no_grad():
        image = reference.encode_image(x, normalize=True)
        classes = []
        for name in class_names:
            text = reference.encode_text(tokenizer([t.format(name) for t in templates]), normalize=True)
            classes.append(torch.nn.functional.normalize(text.mean(dim=0), dim=0))
        return (image @ torch.stack(classes).T).double().numpy()


def test_zero_shot_records_equal_the_argmax_of_direct_cosine_similarities(tiny):
    root, config, weights, reference = tiny
    cfg = load_config(EvalConfig, dotlist=[f"backbones=[{{name: 'clip:{config}', weights: '{weights}'}}]",
                                           f"tasks=[{TASK}]", "protocols=[zero-shot,zero-shot-photo]",
                                           f"out={root / 'run'}", f"cache_dir={root / 'cache'}"])
    records = {r.protocol: r for r in evaluate(cfg)}
    task = create_task(TASK)
    test = task.split("test")
    backbone = create_backbone(f"clip:{config}", weights=weights)
    for protocol, template_set in (("zero-shot", "clip-7"), ("zero-shot-photo", "photo")):
        record = records[protocol]
        cosines = direct_cosines(reference, backbone, test, task.card.classes, TEMPLATE_SETS[template_set])
        top2 = np.sort(cosines, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4  # a near tie may flip with summation order; none is expected
        predictions = np.asarray(record.test_predictions)
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(predictions[clear], cosines.argmax(axis=1)[clear])
        assert record.score == pytest.approx(100 * np.mean(predictions == np.asarray(test.labels)))
        assert record.test_labels == list(test.labels)
        params = record.hyperparameters
        assert params["template_set"] == template_set and params["templates"] == list(TEMPLATE_SETS[template_set])
        assert params["class_names"] == list(task.card.classes) and params["logit_scale"] == pytest.approx(50.0)
        assert record.extra["text_tower"]["weights_id"] == backbone.weights_id
    # The prompts' embeddings were cached on the first run: a forced re-run embeds nothing
    again = {r.protocol: r for r in evaluate(OmegaConf.merge(cfg, {"force": True}))}
    assert again["zero-shot"].extra["text_embeddings_cached"] and again["zero-shot"].score == records["zero-shot"].score


def test_class_name_overrides_custom_templates_and_the_cache_key(tiny, tmp_path):
    _, config, weights, reference = tiny
    backbone = create_backbone(f"clip:{config}", weights=weights)
    task = create_task(TASK)
    images = {s: task.split(s) for s in ("train", "val", "test")}
    x = {s: extract_features(backbone, images[s]).features for s in images}
    data = TaskFeatures(train=FeatureSplit(x["train"], images["train"].labels),
                        val=FeatureSplit(x["val"], images["val"].labels),
                        test=SealedSplit(x["test"], images["test"].labels),
                        task=TASK, class_names=tuple(task.card.classes), backbone=backbone)
    templates = ["a face? {}", "a close-up photo of {}."]
    names = ["a human face", "something else"]
    cfg = OmegaConf.create({"cache_dir": str(tmp_path), "zero_shot": {"templates": templates,
                                                                      "class_names": {TASK: names}}})
    from unirep.metrics import Metric

    outcome = create_protocol("zero-shot", cfg).run(data, Metric.TOP1, 0)
    cosines = direct_cosines(reference, backbone, images["test"], names, templates)
    assert outcome.hyperparameters["template_set"] == "custom" and outcome.hyperparameters["class_names"] == names
    agree = np.mean(np.asarray(outcome.test_predictions) == cosines.argmax(axis=1))
    assert agree > 0.95
    head = zero_shot_head(backbone, names, templates, tmp_path)
    assert head.cached and head.cache_key == TextEmbeddingCache.key(backbone.text_tower.identity(),
                                                                    [t.format(n) for n in names for t in templates])
    assert head.cache_key != zero_shot_head(backbone, names, "photo", tmp_path).cache_key


@pytest.mark.parametrize(("spec", "message"), [
    (["a photo"], "exactly one"),
    (["{} and {}"], "exactly one"),
    ("no-such-set", "exactly one"),
])
def test_bad_templates_are_refused_in_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_templates(spec)
    assert "\n" not in str(caught.value)


def test_a_backbone_without_a_text_tower_is_refused():
    with pytest.raises(ConfigError, match="no text tower"):
        zero_shot_head(create_backbone("raw-pixels", input_size=8), ["a", "b"])


def test_the_zero_shot_head_as_a_fine_tuning_head_on_unit_embeddings(tiny):
    """WiSE-FT's alpha = 0 network: a `clip:` backbone with layer=unit-embedding and a linear head set to the zero-shot
    weights computes CLIP's zero-shot logits (the fine-tuning Classifier, as `unirep finetune` builds it)."""
    from unirep.finetune.module import Classifier

    _, config, weights, _ = tiny
    task = create_task(TASK)
    backbone = create_backbone(f"clip:{config}", weights=weights, layer="unit-embedding")
    head = zero_shot_head(backbone, task.card.classes, "photo")
    net = Classifier(backbone, len(task.card.classes), seed=0)
    weight, bias = head.linear_weights()
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(weight))
        net.head.bias.copy_(torch.from_numpy(bias))
    images = task.split("val").subset(np.arange(12))
    x = torch.stack([backbone.data_config.transform()(images[i][0]) for i in range(len(images))])
    plain = create_backbone(f"clip:{config}", weights=weights)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), head.logits(plain(x).numpy()), rtol=1e-4, atol=1e-4)
        norms = torch.linalg.vector_norm(backbone(x), dim=1)
    np.testing.assert_allclose(norms.numpy(), 1.0, rtol=1e-5)
