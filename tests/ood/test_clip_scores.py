"""MCM and GL-MCM against their formulas computed directly with open_clip (a tiny random config saved as a local
.safetensors file, loaded by open_clip's own loader): real images (scikit-learn's digits) through the backbone's
`tokens` layer, the zero-shot head of digits 0-5 as the classifier."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from scipy.special import softmax

from unirep.backbones import create_backbone
from unirep.features import extract_features
from unirep.ood import SCORES, FitData, LinearHead, ScoreNotApplicable, create_score
from unirep.ood.clip_scores import ZeroShotLinearHead, zero_shot_ood_head
from unirep.tasks import create_task
from unirep.zero_shot import zero_shot_head

TINY = "unirep-test-clip-ood"
ID_NAMES = ["zero", "one", "two", "three", "four", "five"]


@pytest.fixture(scope="module")
def clip_data(tiny_clip):
    config, weights = tiny_clip(TINY, seed=2)
    root = config.parent
    reference = open_clip.create_model(TINY, pretrained=str(weights)).eval()
    backbone = create_backbone(f"clip:{TINY}", weights=weights, layer="tokens")
    split = create_task("sklearn-digits").split("val")
    images = split.subset(np.arange(80))
    features = extract_features(backbone, images).features
    head = zero_shot_head(backbone, ID_NAMES, "photo", root / "cache")
    return reference, backbone, images, features, head


def direct(reference, backbone, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit image embeddings (B, E), unit local patch embeddings (B, N, E), unit class embeddings (K, E)) with
    open_clip alone: the local ones from the last block with self-only attention (an attention mask)."""
    x = torch.stack([backbone.data_config.transform()(images[i][0]) for i in range(len(images))])
    tokenizer = open_clip.get_tokenizer(TINY)
    visual = reference.visual
    with torch.no_grad():
        image = reference.encode_image(x, normalize=True)
        tokens = visual.transformer.resblocks[0](visual._embeds(x))
        n = tokens.shape[1]
        mask = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
        local = visual.ln_post(visual.transformer.resblocks[1](tokens, attn_mask=mask)[:, 1:]) @ visual.proj
        text = reference.encode_text(tokenizer([f"a photo of a {name}." for name in ID_NAMES]), normalize=True)
    unit = torch.nn.functional.normalize
    return image.double().numpy(), unit(local, dim=-1).double().numpy(), text.double().numpy()


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_mcm_and_gl_mcm_equal_their_formulas(clip_data, temperature):
    reference, backbone, images, features, head = clip_data
    fit = FitData(features, np.zeros(len(features), int), ZeroShotLinearHead.from_zero_shot(head))
    image, local, text = direct(reference, backbone, images)
    mcm = softmax(image @ text.T / temperature, axis=1).max(axis=1)
    local_mcm = softmax(local @ text.T / temperature, axis=2).max(axis=2).max(axis=1)
    ours_mcm = create_score("mcm", temperature=temperature).setup(fit).score(features, None)
    ours_gl = create_score("gl-mcm", temperature=temperature).setup(fit).score(features, None)
    np.testing.assert_allclose(ours_mcm, mcm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours_gl, mcm + local_mcm, rtol=1e-4, atol=1e-6)
    assert np.ptp(ours_mcm) > 0 and np.all(ours_gl > ours_mcm)  # the local term adds a max-softmax in (0, 1]
    # MCM reads only the image embedding: on the plain embedding layer it gives the same numbers
    assert np.allclose(create_score("mcm", temperature=temperature).setup(fit).score(features[:, :32], None), ours_mcm)


def test_gl_mcms_local_weight_scales_the_local_term(clip_data):
    _, _, _, features, head = clip_data
    fit = FitData(features, np.zeros(len(features), int), ZeroShotLinearHead.from_zero_shot(head))
    mcm = create_score("mcm").setup(fit).score(features, None)
    one = create_score("gl-mcm").setup(fit).score(features, None)
    half = create_score("gl-mcm", local_weight=0.5).setup(fit).score(features, None)
    np.testing.assert_allclose(half - mcm, (one - mcm) / 2, rtol=1e-9, atol=1e-12)


def test_the_zero_shot_linear_head_gives_clips_logits(clip_data):
    reference, backbone, images, features, head = clip_data
    linear = ZeroShotLinearHead.from_zero_shot(head)
    image, _, text = direct(reference, backbone, images)
    expected = head.logit_scale * image @ text.T  # CLIP's logits: logit_scale * cosine similarity
    np.testing.assert_allclose(linear.logits(features), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(linear.logits(features[:, :32]), head.logits(features), rtol=1e-9, atol=1e-9)
    # a raw-feature linear layer with the same weights on unit embeddings: the LinearHead contract
    unit = features[:, :32].astype(np.float64) / np.linalg.norm(features[:, :32].astype(np.float64), axis=1)[:, None]
    np.testing.assert_allclose(LinearHead(linear.weight, linear.bias).logits(unit), expected, rtol=1e-4, atol=1e-4)


def test_the_ood_head_follows_the_benchmarks_id_label_order(clip_data):
    from types import SimpleNamespace

    _, backbone, _, features, head = clip_data
    order = ("two", "zero", "five")
    ood_head = zero_shot_ood_head(backbone, SimpleNamespace(id_classes=order), "photo")
    rows = [ID_NAMES.index(name) for name in order]
    # re-embedded in another batch: float32 rounding differs by ~1e-6
    np.testing.assert_allclose(ood_head.weight, head.embeddings[rows] * head.logit_scale, rtol=1e-5, atol=1e-5)


def test_other_heads_and_features_are_not_applicable(clip_data):
    _, _, _, features, head = clip_data
    probe_head = LinearHead(np.asarray(head.embeddings), np.zeros(len(head.embeddings)))
    for name in ("mcm", "gl-mcm"):
        assert SCORES.get(name).paper
        with pytest.raises(ScoreNotApplicable, match="zero-shot head"):
            create_score(name).setup(FitData(features, np.zeros(len(features), int), probe_head))
    zero_shot = ZeroShotLinearHead.from_zero_shot(head)
    with pytest.raises(ScoreNotApplicable, match="layer=tokens"):
        create_score("gl-mcm").setup(FitData(features[:, :32], np.zeros(len(features), int), zero_shot))
    with pytest.raises(ScoreNotApplicable, match="dimension 32"):
        create_score("mcm").setup(FitData(features[:, :31], np.zeros(len(features), int), zero_shot))


def test_unirep_ood_with_the_zero_shot_classifier(tiny_clip, tmp_path):
    """`unirep ood clip:<tower> --classifier zero-shot` on a shipped benchmark: MCM and MSP records on CLIP's
    class-prompt head, whose ID accuracy is CLIP's zero-shot recipe written out with open_clip alone (the clip-7
    prompts of each ID class name embedded, averaged, normalised; argmax of the cosine with each test image)."""
    from unirep.cli import main
    from unirep.ood.benchmarks import create_benchmark
    from unirep.ood.metrics import ood_metrics
    from unirep.ood.records import load_ood_records
    from unirep.zero_shot import TEMPLATE_SETS

    name = "unirep-test-clip-ood-cli"
    config, weights = tiny_clip(name, seed=3)
    bench_name = "opencv-digits-ood"
    argv = ["ood", f"clip:{config}", "--weights", str(weights), "--benchmarks", bench_name, "--classifier",
            "zero-shot", "--scores", "mcm,msp", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    records = {r.ood_score: r for r in load_ood_records(tmp_path / "out")}
    assert sorted(records) == ["mcm", "msp"] and {r.classifier for r in records.values()} == {"zero-shot"}

    bench = create_benchmark(bench_name)
    test = bench.sets["id/test"]
    images = bench.tasks[test.task].split(test.split).subset(test.rows)
    transform = create_backbone(f"clip:{config}", weights=weights).data_config.transform()
    reference = open_clip.create_model(name, pretrained=str(weights)).eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image = torch.cat([reference.encode_image(torch.stack([transform(images[i][0])
                                                               for i in range(start, min(start + 256, len(images)))]),
                                                  normalize=True) for start in range(0, len(images), 256)])
        classes = []
        for class_name in bench.id_classes:
            prompts = reference.encode_text(tokenizer([t.format(class_name) for t in TEMPLATE_SETS["clip-7"]]),
                                            normalize=True)
            classes.append(torch.nn.functional.normalize(prompts.mean(0), dim=0))
    predicted = (image @ torch.stack(classes).T).argmax(1).numpy()
    expected = 100.0 * float((predicted == test.labels).mean())
    for record in records.values():
        assert record.id_accuracy == pytest.approx(expected, abs=1e-9)
        assert record.classifier_hyperparameters["template_set"] == "clip-7"
    mcm = records["mcm"]  # its AUROCs follow from its own per-example scores
    for key, scores in mcm.ood_test_scores.items():
        assert mcm.metrics["sets"][key] == pytest.approx(ood_metrics(np.array(mcm.id_test_scores), np.array(scores)),
                                                         abs=1e-9)
