"""The prototype head and its fit, on synthetic maps (no backbone): projection lands every prototype exactly on a
training patch's add-on vector (the nearest one of its class, checked by brute force), pruning merges exact
duplicates without changing a logit, the band variant ignores every position outside a prototype's band (checked
against a direct computation), and the costs are ProtoPNet's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unirep.prototypes.maps import MapSplit
from unirep.prototypes.model import (
    SIMILARITY_EPS,
    PrototypeHead,
    cluster_and_separation,
    negative_connections_l1,
)
from unirep.prototypes.settings import PrototypeSettings
from unirep.prototypes.train import (
    class_scores,
    fit_prototypes,
    project_prototypes,
    prune_duplicates,
)

PARAMS = {"lr": 0.01, "prototypes_per_class": 2, "cluster_weight": 0.8, "separation_weight": 0.08}


def synthetic_maps(n_per_class: int = 12, classes: int = 3, channels: int = 6, size: tuple = (7, 5), seed: int = 0):
    """Class k's maps carry a bump in channel k at a class-specific row: learnable, with positions that matter."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.3, (n_per_class * classes, channels, *size)).astype(np.float32)
    labels = np.repeat(np.arange(classes), n_per_class)
    for i, k in enumerate(labels):
        maps[i, k, (2 * k) % size[0], rng.integers(size[1])] += 3.0
    return MapSplit(torch.from_numpy(maps), labels)


def test_projection_puts_each_prototype_exactly_on_its_nearest_own_class_patch():
    data = synthetic_maps()
    fit = fit_prototypes(data, 3, PARAMS, PrototypeSettings(epochs=2, prototype_dim=8, last_layer_steps=5), 0, False)
    head = fit.head
    with torch.no_grad():
        z = head.features(data.maps)  # the add-on is not changed by projection or the last-layer fit
    projection = fit.projection
    for j in range(head.num_prototypes):
        i, row, col = int(projection.example[j]), int(projection.row[j]), int(projection.col[j])
        assert torch.equal(head.prototypes[j].detach(), z[i, :, row, col]), j  # exactly a training patch
        assert data.labels[i] == int(head.prototype_class[j])  # of the prototype's own class
    # The nearest one, by brute force from the prototypes before projection (no pruning, so indices line up).
    before = copy.deepcopy(fit.head_before_projection)
    unpruned = project_prototypes(copy.deepcopy(before), data, prune=False)
    old = before.prototypes.detach().numpy().astype(np.float64)
    patches = z.permute(0, 2, 3, 1).numpy().astype(np.float64)  # (N, H, W, D)
    for j in range(before.num_prototypes):
        own = data.labels == int(before.prototype_class[j])
        distances = ((patches[own] - old[j]) ** 2).sum(-1)
        chosen = patches[unpruned.example[j], unpruned.row[j], unpruned.col[j]]
        assert ((chosen - old[j]) ** 2).sum() == pytest.approx(distances.min(), rel=1e-4, abs=1e-6)


def test_pruning_merges_prototypes_projected_onto_one_patch_and_keeps_the_logits():
    data = synthetic_maps()
    head = PrototypeHead(6, 3, 3, 8, (7, 5), seed=1)
    with torch.no_grad():
        head.prototypes[1] = head.prototypes[0]  # two of class 0's prototypes must land on the same patch
    unpruned = copy.deepcopy(head)
    projection = project_prototypes(unpruned, data, prune=False)
    where = torch.as_tensor(np.stack([projection.example, projection.row, projection.col], 1))
    keys = [tuple(r) for r in where.tolist()]
    duplicates = len(keys) - len(set(keys))
    assert duplicates >= 1
    pruned = copy.deepcopy(unpruned)
    kept = prune_duplicates(pruned, where)
    assert pruned.num_prototypes == 9 - duplicates == len(kept) and 1 not in kept
    assert len({tuple(where[j].tolist()) for j in kept}) == len(kept)  # no two kept share a patch
    np.testing.assert_allclose(class_scores(pruned, data.maps), class_scores(unpruned, data.maps), rtol=1e-5,
                               atol=1e-5)
    full = project_prototypes(copy.deepcopy(head), data)  # the fit's own path prunes and counts them
    assert full.pruned == duplicates and len(full.example) == 9 - duplicates


def test_band_prototypes_ignore_every_position_outside_their_band():
    torch.manual_seed(0)
    head = PrototypeHead(4, 2, 2, 5, (7, 3), band=1, seed=2).eval()
    with torch.no_grad():
        head.band_row.copy_(torch.tensor([0, 3, 6, 2]))
    maps = torch.randn(5, 4, 7, 3)
    s = head.similarities(maps)
    # direct computation: the max over rows r_j - 1 .. r_j + 1 (clipped to the map) of log((d + 1) / (d + eps))
    with torch.no_grad():
        z = head.features(maps).numpy().astype(np.float64)
    protos = head.prototypes.detach().numpy().astype(np.float64)
    for j, r in enumerate([0, 3, 6, 2]):
        rows = slice(max(r - 1, 0), r + 2)
        d = ((z[:, :, rows, :] - protos[j][None, :, None, None]) ** 2).sum(1)
        expected = np.log((d + 1) / (d + SIMILARITY_EPS)).reshape(len(maps), -1).max(1)
        np.testing.assert_allclose(s[:, j].detach().numpy(), expected, rtol=1e-4)
    # change everything outside prototype 1's band (rows 2-4): its similarity stays, others' may move
    changed = maps.clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2]) * 5
    changed[:, :, 5:] = torch.randn_like(changed[:, :, 5:]) * 5
    after = head.similarities(changed)
    torch.testing.assert_close(after[:, 1], s[:, 1])
    assert not torch.allclose(after[:, 0], s[:, 0])
    inside = maps.clone()
    inside[:, :, 3] += 5.0
    assert not torch.allclose(head.similarities(inside)[:, 1], s[:, 1])
    # the spatially invariant head sees every row
    invariant = copy.deepcopy(head)
    invariant.band = None
    assert not torch.allclose(invariant.similarities(changed)[:, 1], invariant.similarities(maps)[:, 1])


def test_band_projection_stays_in_the_band_and_recentres_it():
    data = synthetic_maps()
    head = PrototypeHead(6, 3, 2, 8, (7, 5), band=1, seed=3)
    start = head.band_row.clone()
    projection = project_prototypes(head, data, prune=False)
    assert (np.abs(projection.row - start.numpy()) <= 1).all()
    assert (head.band_row.numpy() == projection.row).all()


def test_costs_are_protopnets():
    min_distances = torch.tensor([[1.0, 4.0, 2.0, 9.0], [5.0, 3.0, 0.5, 7.0]])
    identity = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])  # prototypes 0,1 -> class 0; 2,3 -> 1
    cluster, separation = cluster_and_separation(min_distances, torch.tensor([0, 1]), identity)
    assert float(cluster) == pytest.approx((1.0 + 0.5) / 2)
    assert float(separation) == pytest.approx((2.0 + 3.0) / 2)
    head = PrototypeHead(3, 2, 2, 4, (2, 2))
    # initial last layer: +1 own class, -0.5 others: four -0.5 connections
    assert float(negative_connections_l1(head).detach()) == pytest.approx(4 * 0.5)


def test_bad_settings_are_one_line():
    from unirep.errors import ConfigError

    with pytest.raises(ConfigError, match="prototype settings: lrs"):
        PrototypeSettings(lrs=[]).grid()
    with pytest.raises(ConfigError, match="refit"):
        PrototypeSettings(refit="test").grid()
