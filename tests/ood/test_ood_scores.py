"""Every OoD score against an independent computation on the same features and logits: pytorch-ood 0.4.0 where it
implements the score (its detectors return outlier scores, higher = more OoD, sometimes rescaled: each expected
value below states the relation), a direct numpy formula for GEN's paper form. Then the sanity properties: an OoD
set equal to the ID test set gives AUROC 50, relabelling the ID classes leaves the scores as they were, and a
hyperparameter is chosen on the validation OoD set alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.detector import ASH, GEN, KNN, RMD, EnergyBased, Entropy, Mahalanobis, MaxLogit, MaxSoftmax, ReAct, ViM
from scipy.special import softmax

from unirep.ood import SCORES, FitData, LinearHead, ScoreNotApplicable, create_score, list_scores, ood_metrics
from unirep.ood.gaussian_scores import Whitening
from unirep.ood.run import select_and_setup
from unirep.probes.linear import LinearProbe

ALL_SCORES = ["ash", "energy", "entropy", "gen", "knn", "mahalanobis", "max-logit", "msp", "react", "rmds", "vim"]


def tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, np.float64))


def torch_head(head: LinearHead):
    weight, bias = tensor(head.weight), tensor(head.bias)
    return lambda x: x.reshape(len(x), -1).double() @ weight.T + bias


def ours(name: str, data, features: np.ndarray, **params) -> np.ndarray:
    score = create_score(name, **params).setup(data.fit)
    return score.score(features, data.logits(features))


def test_the_registry_holds_every_score_of_the_issue():
    # the CLIP scores (MCM, GL-MCM: unirep/ood/clip_scores.py, tested in tests/ood/test_clip_scores.py) read a CLIP
    # tower's zero-shot head, so the feature tests here leave them out
    assert [n for n in list_scores() if SCORES.get(n).__module__ != "unirep.ood.clip_scores"] == ALL_SCORES
    for name in ALL_SCORES:
        assert SCORES.get(name).paper, f"{name} names its paper"


def test_the_head_reproduces_the_probes_logits(score_data):
    np.testing.assert_allclose(score_data.logits(score_data.test), score_data.probe.decision_scores(score_data.test),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "reference", "atol"), [
    ("msp", lambda z: -MaxSoftmax.score(z), 1e-12),
    ("max-logit", lambda z: -MaxLogit.score(z), 1e-12),
    ("energy", lambda z: -EnergyBased.score(z, t=1.0), 1e-12),
    # pytorch-ood clips p at 1e-7 before the log: each clipped term differs by at most 1.6e-6
    ("entropy", lambda z: -Entropy.score(z), 1e-5),
])
def test_logit_scores_match_pytorch_ood(score_data, name, reference, atol):
    logits = score_data.logits(score_data.ood)
    np.testing.assert_allclose(ours(name, score_data, score_data.ood), reference(tensor(logits)).numpy(),
                               rtol=1e-9, atol=atol)


def test_entropy_is_the_negative_shannon_entropy(score_data):
    p = softmax(score_data.logits(score_data.ood), axis=1)
    expected = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    np.testing.assert_allclose(ours("entropy", score_data, score_data.ood), expected, rtol=1e-9, atol=1e-12)


def test_gen_matches_pytorch_ood_and_the_papers_sum(score_data):
    logits = score_data.logits(score_data.test) / 4  # moderate logits: pytorch-ood clamps p to [1e-7, 1 - 1e-7]
    n_classes = logits.shape[1]
    got = create_score("gen").score(None, logits)
    # pytorch-ood averages the top-M terms where the paper sums them: ours = -M * theirs
    np.testing.assert_allclose(got, -n_classes * GEN.score(tensor(logits), gamma=0.1, M=n_classes).numpy(), rtol=1e-6)
    p = softmax(logits, axis=1)
    np.testing.assert_allclose(got, -np.sum(p**0.1 * (1 - p) ** 0.1, axis=1), rtol=1e-12)
    top2 = create_score("gen", top_m=2).score(None, logits)
    p_top = np.sort(p, axis=1)[:, -2:]
    np.testing.assert_allclose(top2, -np.sum(p_top**0.1 * (1 - p_top) ** 0.1, axis=1), rtol=1e-12)


@pytest.mark.parametrize("percentile", [85, 95])
def test_react_matches_pytorch_ood(score_data, percentile):
    detector = ReAct(backbone=None, head=torch_head(score_data.head), percentile=percentile / 100)
    detector.fit_feature_maps(tensor(score_data.train), torch.as_tensor(score_data.train_labels))
    expected = -detector.predict_feature_maps(tensor(score_data.ood)).numpy()
    got = ours("react", score_data, score_data.ood, percentile=percentile)
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # thresholds: percentile of float32 vs float64 features
    assert not np.allclose(got, ours("energy", score_data, score_data.ood)), "the clipping changes the energy"


@pytest.mark.parametrize("percentile", [65, 90])
def test_ash_matches_pytorch_ood_ash_s(score_data, percentile):
    detector = ASH(backbone=None, head=torch_head(score_data.head), variant="ash-s", percentile=percentile / 100)
    expected = -detector.predict_feature_maps(tensor(score_data.ood)[:, :, None, None]).numpy()
    np.testing.assert_allclose(ours("ash", score_data, score_data.ood, percentile=percentile), expected, rtol=1e-9)


def test_ash_refuses_features_with_negative_values(score_data):
    shifted = FitData(score_data.train - 1.0, score_data.train_labels, score_data.head)
    with pytest.raises(ScoreNotApplicable, match="non-negative"):
        create_score("ash").setup(shifted)


@pytest.mark.parametrize("dim_fraction", [0.25, 0.5])
def test_vim_matches_pytorch_ood(score_data, dim_fraction):
    # The probe's head has rank K - 1 up to its solver's tolerance (rows summing to ~1e-4, not 0): that last singular
    # value sits near pinv's cut-offs and, amplified into the origin u, decides the comparison more than ViM does.
    # Both sides get the head with its class-mean row removed (the same probabilities), so the rank is exact.
    weight = score_data.head.weight - score_data.head.weight.mean(axis=0)
    head = LinearHead(weight, score_data.head.bias)
    fit = FitData(score_data.train, score_data.train_labels, head)
    score = create_score("vim", dim_fraction=dim_fraction).setup(fit)
    detector = ViM(None, d=score.dim_, w=tensor(head.weight), b=tensor(head.bias))
    detector.fit_features(tensor(score_data.train), torch.as_tensor(score_data.train_labels))
    expected = -detector.predict_features(tensor(score_data.ood)).numpy()  # float32 inside pytorch-ood
    got = score.score(score_data.ood, head.logits(score_data.ood))
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    assert score.alpha_ == pytest.approx(detector.alpha, rel=1e-3)


@pytest.fixture
def float64_default():
    """pytorch-ood's Gaussian detectors allocate their means in the default dtype: float64 for an exact comparison."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_mahalanobis_matches_pytorch_ood_and_the_direct_formula(score_data, float64_default):
    detector = Mahalanobis(None).fit_features(tensor(score_data.train), torch.as_tensor(score_data.train_labels))
    # pytorch-ood's covariance is the unnormalised sum (n times ours) plus a 1e-6 ridge, and its score half the
    # squared distance: ours = -2 n * theirs, up to the ridge (relative 1e-4 on these features' smallest variances)
    expected = -2 * len(score_data.train) * detector.predict_features(tensor(score_data.ood)).numpy()
    got = ours("mahalanobis", score_data, score_data.ood)
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    means, covariance = class_gaussians(score_data)
    direct = [-min((x - m) @ np.linalg.solve(covariance, x - m) for m in means) for x in score_data.ood.astype(float)]
    np.testing.assert_allclose(got, direct, rtol=1e-7)


def test_rmds_matches_pytorch_ood_and_the_direct_formula(score_data, float64_default):
    detector = RMD(None).fit_features(tensor(score_data.train), torch.as_tensor(score_data.train_labels))
    # Both of pytorch-ood's covariances are unnormalised sums (with the same ridge): ours = -n * theirs
    expected = -len(score_data.train) * detector.predict_features(tensor(score_data.ood)).numpy()
    got = ours("rmds", score_data, score_data.ood)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    means, covariance = class_gaussians(score_data)
    train = score_data.train.astype(float)
    mu0, cov0 = train.mean(axis=0), np.cov(train.T, bias=True)
    direct = [-min((x - m) @ np.linalg.solve(covariance, x - m) - (x - mu0) @ np.linalg.solve(cov0, x - mu0)
                   for m in means) for x in score_data.ood.astype(float)]
    np.testing.assert_allclose(got, direct, rtol=1e-6, atol=1e-7 * np.abs(direct).max())
    assert not np.allclose(got, ours("mahalanobis", score_data, score_data.ood))
    assert create_score("rmds").setup(score_data.fit).woodbury_  # the Cholesky + Woodbury path was the one tested


def test_rmds_on_rank_deficient_features_takes_both_pseudo_inverses(score_data):
    # Repeated columns (as grey images' three equal channels): the tied covariance is singular, Woodbury does not
    # hold for pseudo-inverses, and the background Gaussian's pinv is taken on its own. Direct formula with pinvs.
    def doubled(x):
        return np.concatenate([x, x[:, :10]], axis=1)

    fit = FitData(doubled(score_data.train), score_data.train_labels, None)
    score = create_score("rmds").setup(fit)
    assert not score.woodbury_ and not score.whitening_.invertible
    ood = doubled(score_data.ood).astype(float)
    train = doubled(score_data.train).astype(float)
    means = [train[score_data.train_labels == c].mean(axis=0) for c in range(6)]
    centred = np.concatenate([train[score_data.train_labels == c] - means[c] for c in range(6)])
    tied, background = np.linalg.pinv(centred.T @ centred / len(train)), np.linalg.pinv(np.cov(train.T, bias=True))
    mu0 = train.mean(axis=0)
    direct = [-min((x - m) @ tied @ (x - m) - (x - mu0) @ background @ (x - mu0) for m in means) for x in ood]
    got = score.score(ood, None)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max())
    maha = [-min((x - m) @ tied @ (x - m) for m in means) for x in ood]
    np.testing.assert_allclose(create_score("mahalanobis").setup(fit).score(ood, None), maha, rtol=1e-5,
                               atol=1e-6 * np.abs(maha).max())


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_whitening_reproduces_the_pseudo_inverse_quadratic_forms(rank_deficient):
    rng = np.random.default_rng(3)
    factor = rng.normal(size=(12, 8 if rank_deficient else 12))
    covariance = factor @ factor.T / 12
    whitening = Whitening.of(covariance)
    assert whitening.invertible is not rank_deficient
    x, y = rng.normal(size=(5, 12)), rng.normal(size=(3, 12))
    pinv = np.linalg.pinv(covariance, hermitian=True)
    zx, zy = whitening.apply(x), whitening.apply(y)
    np.testing.assert_allclose(whitening.quadratic(zx), np.einsum("ij,jk,ik->i", x, pinv, x), rtol=1e-9)
    np.testing.assert_allclose(whitening.cross(zx, zy), x @ pinv @ y.T, rtol=1e-9, atol=1e-9)


def class_gaussians(data) -> tuple[list[np.ndarray], np.ndarray]:
    train = data.train.astype(float)
    means = [train[data.train_labels == c].mean(axis=0) for c in range(6)]
    centred = np.concatenate([train[data.train_labels == c] - means[c] for c in range(6)])
    return means, centred.T @ centred / len(train)


@pytest.mark.parametrize("k", [1, 50])
def test_knn_matches_pytorch_ood(score_data, k):
    detector = KNN(None, k=k).fit_features(tensor(score_data.train), torch.as_tensor(score_data.train_labels))
    expected = -detector.predict_features(tensor(score_data.ood)).numpy()  # sklearn's exact Euclidean search
    np.testing.assert_allclose(ours("knn", score_data, score_data.ood, k=k), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL_SCORES)
def test_an_ood_set_equal_to_the_id_test_set_gives_auroc_50(score_data, name):
    params = {"percentile": 65} if name == "ash" else {}  # 90 % of 40 features pruned leaves ASH little to go on
    scores = ours(name, score_data, score_data.test, **params)
    assert ood_metrics(scores, scores.copy())["auroc"] == pytest.approx(50.0, abs=1e-9)
    # and the scores do tell the held-out digits apart (so the 50 above is not a constant score)
    assert ood_metrics(scores, ours(name, score_data, score_data.ood, **params))["auroc"] > 60


@pytest.fixture(scope="module")
def relabelled_heads(score_data):
    """Heads fitted on the ID labels and on a permutation of them, both solved tightly in float64, so what remains
    between their scores is the relabelling alone."""
    permutation = np.array([3, 5, 0, 1, 4, 2])
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a small problem: one thread avoids OpenMP contention on a busy machine
    try:
        heads = {}
        labelings = {"original": score_data.train_labels, "relabelled": permutation[score_data.train_labels]}
        for key, labels in labelings.items():
            probe = LinearProbe(C=1.0, tol=1e-8, dtype="float64", max_iter=5000).fit(score_data.train, labels)
            heads[key] = FitData(score_data.train, labels, LinearHead.from_probe(probe))
    finally:
        torch.set_num_threads(before)
    return heads


@pytest.mark.parametrize("name", ALL_SCORES)
def test_relabelling_the_id_classes_leaves_the_scores_unchanged(score_data, relabelled_heads, name):
    original, relabelled = (relabelled_heads[k] for k in ("original", "relabelled"))
    assert not np.array_equal(original.labels, relabelled.labels)

    def scores(fit):
        return create_score(name).setup(fit).score(score_data.ood, fit.head.logits(score_data.ood))

    np.testing.assert_allclose(scores(relabelled), scores(original), rtol=1e-5, atol=1e-6)


def test_hyperparameters_are_chosen_on_the_validation_ood_set_alone(score_data):
    def inputs(features):
        return features, score_data.logits(features)

    val_id, val_ood = score_data.test[:150], score_data.ood[:200]
    chosen, tried = select_and_setup(SCORES.get("knn"), score_data.fit, inputs(val_id), inputs(val_ood))
    assert [t["params"]["k"] for t in tried] == [50, 1, 5, 10, 20, 100, 200]
    best = max(tried, key=lambda t: t["val_auroc"])  # max keeps the first of equal values, as the selection does
    assert chosen.params == best["params"]
    for entry in tried:  # each value is the AUROC of that candidate on the val sets, nothing else
        candidate = create_score("knn", **entry["params"]).setup(score_data.fit)
        auroc = ood_metrics(candidate.score(*inputs(val_id)), candidate.score(*inputs(val_ood)))["auroc"]
        assert entry["val_auroc"] == pytest.approx(auroc, abs=1e-12)


def test_a_score_is_one_decorated_function():
    from unirep.ood import register_score

    @register_score("test-top2-margin", paper="margin between the two largest logits (test only)")
    def top2_margin(logits):
        top = np.sort(logits, axis=1)
        return top[:, -1] - top[:, -2]

    try:
        logits = np.array([[3.0, 1.0, 0.0], [1.0, 0.9, 0.0]])
        np.testing.assert_allclose(create_score("test-top2-margin").score(None, logits), [2.0, 0.1])
        assert not SCORES.get("test-top2-margin").grid
    finally:
        SCORES._entries.pop("test-top2-margin")


def test_react_thresholds_are_numpys_percentiles_and_shared_by_the_candidates(score_data):
    from unirep.ood.feature_scores import _percentiles

    rng = np.random.default_rng(0)
    for values in (rng.random((30, 7)), rng.integers(0, 5, (11, 3)).astype(float), score_data.train):
        quantiles = [0, 12.5, 50, 85, 90, 99, 100]
        np.testing.assert_allclose(_percentiles(values, quantiles), np.percentile(values.astype(float), quantiles),
                                   rtol=1e-12, atol=1e-12)
    fit = score_data.fit
    thresholds = {p: create_score("react", percentile=p).setup(fit).threshold_ for p in (90, 85, 70)}
    assert set(fit.memo["react"]) >= {70, 85, 90, 95, 99}
    assert thresholds[70] < thresholds[85] < thresholds[90]
