"""RankMe, alpha-ReQ, NC1 and linear CKA against values an independent computation gives, and the section on a
small real backbone (its A-vs-B differences: CKA of a backbone with itself is 1, with another below 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.inspect.representation import (
    Representation,
    alpha_req,
    covariance_spectrum,
    linear_cka,
    nc1,
    rankme,
)


def orthonormal(rng: np.random.Generator, n: int, k: int, centred: bool = False) -> np.ndarray:
    block = rng.standard_normal((n, k))
    if centred:
        block -= block.mean(axis=0)
    return np.linalg.qr(block)[0]


@pytest.mark.parametrize("k", [1, 5, 17])
def test_rankme_of_k_equal_singular_values_is_k(k):
    rng = np.random.default_rng(k)
    U, V = orthonormal(rng, 80, k), orthonormal(rng, 40, k)
    features = 3.7 * U @ V.T  # singular values: k times 3.7, then zeros
    assert rankme(features) == pytest.approx(k, rel=1e-4)


def test_rankme_follows_the_entropy_of_unequal_singular_values():
    rng = np.random.default_rng(0)
    sigma = np.array([4.0, 2.0, 1.0, 1.0])
    features = orthonormal(rng, 50, 4) @ np.diag(sigma) @ orthonormal(rng, 12, 4).T
    # The paper's p_k = sigma_k / |sigma|_1 + eps over all min(N, D) = 12 singular values, 8 of them zero.
    p = np.concatenate([sigma / sigma.sum(), np.zeros(8)]) + 1e-7
    assert rankme(features) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.6, 1.0, 2.3])
def test_alpha_req_recovers_the_power_law_of_a_synthetic_spectrum(alpha):
    rng = np.random.default_rng(1)
    n, d = 400, 60
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    # Centred orthonormal columns scaled so the covariance (1/N) has exactly these eigenvalues.
    features = orthonormal(rng, n, d, centred=True) @ np.diag(np.sqrt(lam * n)) @ orthonormal(rng, d, d).T + 5.0
    assert covariance_spectrum(features) == pytest.approx(lam, rel=1e-6)
    fit = alpha_req(features)
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9) and fit["n_fit"] == d


def test_nc1_matches_the_direct_formula():
    rng = np.random.default_rng(2)
    C, D = 4, 9
    labels = rng.integers(0, C, 150)
    features = rng.standard_normal((150, D)) + 2.0 * rng.standard_normal((C, D))[labels]
    classes = np.unique(labels)
    mu_g = features.mean(axis=0)
    mus = np.stack([features[labels == c].mean(axis=0) for c in classes])
    within = sum((features[labels == c] - mus[i]).T @ (features[labels == c] - mus[i]) for i, c in enumerate(classes))
    sigma_w = within / len(features)
    sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in mus) / C
    expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / C
    assert nc1(features, labels) == pytest.approx(expected, rel=1e-8)
    # Collapsed classes (every example at its class mean) give 0; relabelling changes nothing.
    assert nc1(mus[np.searchsorted(classes, labels)], labels) == pytest.approx(0.0, abs=1e-12)
    assert nc1(features, np.array([7, 3, 9, 1])[labels]) == pytest.approx(expected, rel=1e-8)


def direct_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Kornblith et al.'s HSIC form with the centring matrix H: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.mark.parametrize("shape", [(60, 8), (20, 50)], ids=["n>d", "n<d"])
def test_linear_cka_is_one_under_rotation_and_matches_the_direct_formula(shape):
    rng = np.random.default_rng(3)
    X = rng.standard_normal(shape)
    rotation = orthonormal(rng, shape[1], shape[1])
    assert linear_cka(X, X @ rotation) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(X, 0.01 * X @ rotation + 4.0) == pytest.approx(1.0, abs=1e-10)
    Y = X[:, :3] @ rng.standard_normal((3, 7)) + 0.5 * rng.standard_normal((shape[0], 7))
    value = linear_cka(X, Y)
    assert value == pytest.approx(direct_cka(X, Y), rel=1e-9)
    assert 0.0 < value < 1.0


def test_section_numbers_and_its_differences_on_real_backbones():
    from unirep.backbones import create_backbone
    from unirep.inspect.context import InspectContext

    torch.manual_seed(0)
    images, labels = torch.rand(36, 3, 32, 32), torch.arange(36) % 3
    # The section reads features and layer maps only: no probe needed (classifier=Identity keeps the test fast).
    contexts = [InspectContext.for_testing(create_backbone("random:resnet18", input_size=32, seed=seed), images,
                                           labels, layers=["stage1", "stage3"], n_images=36,
                                           classifier=torch.nn.Identity())
                for seed in (0, 1)]
    section = Representation()
    a, a_again, b = section.run(contexts[0]), section.run(contexts[0]), section.run(contexts[1])
    train_val = np.concatenate([contexts[0].features("train")[0], contexts[0].features("val")[0]])
    assert a.numbers["features"]["rankme"] == pytest.approx(rankme(train_val), rel=1e-12)
    assert set(a.numbers["layers"]) == {"stage1", "stage3"}
    same = section.differences(a, a_again)
    assert same.numbers["cka_features"] == pytest.approx(1.0, abs=1e-9)
    assert np.diag(same.numbers["cka_layers"]["values"]) == pytest.approx([1.0, 1.0], abs=1e-9)
    other = section.differences(a, b)
    assert other.numbers["cka_features"] < 0.999
    assert np.asarray(other.numbers["cka_layers"]["values"]).shape == (2, 2)
    assert other.numbers["delta"]["rankme"] == pytest.approx(
        b.numbers["features"]["rankme"] - a.numbers["features"]["rankme"])
    assert "Plotly.newPlot" in other.html and "Plotly.newPlot" in a.html
