"""OoD metrics against scikit-learn (roc_auc_score, average_precision_score), a direct threshold scan for FPR@95 %TPR
in both conventions, and pytorch-ood's FPR95TPR (the OoD-positive convention), on continuous and heavily tied
scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.metrics.functional import fpr_at_tpr
from sklearn.metrics import average_precision_score, roc_auc_score

from unirep.errors import DataError
from unirep.ood.metrics import CONVENTIONS, METRICS, auroc, group_means, ood_metrics, resampled_ood_metrics


def cases():
    rng = np.random.default_rng(0)
    for seed, (n_id, n_ood, shift, rounding) in enumerate([(500, 300, 1.0, None), (200, 700, 0.3, 1), (40, 37, 2.0, 0),
                                                            (1000, 1000, 0.0, None), (97, 150, -0.5, 1)]):
        id_scores = rng.normal(shift, 1.0, n_id)
        ood_scores = rng.normal(0.0, 1.3, n_ood)
        if rounding is not None:  # ties within and across the two sets
            id_scores, ood_scores = np.round(id_scores, rounding), np.round(ood_scores, rounding)
        yield pytest.param(id_scores, ood_scores, id=f"case{seed}-ties{rounding}")


def fpr_by_scan(positive: np.ndarray, negative: np.ndarray, recall: float = 0.95) -> float:
    """The share of negatives scoring >= the highest threshold that keeps `recall` of the positives."""
    for threshold in np.sort(np.unique(np.concatenate([positive, negative])))[::-1]:
        if np.mean(positive >= threshold) >= recall:
            return float(np.mean(negative >= threshold))
    raise AssertionError("unreachable: the lowest threshold keeps every positive")


@pytest.mark.parametrize(("id_scores", "ood_scores"), cases())
def test_metrics_match_scikit_learn_and_direct_fpr95(id_scores, ood_scores):
    got = ood_metrics(id_scores, ood_scores)
    assert set(got) == set(METRICS) == set(CONVENTIONS)
    is_id = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    scores = np.r_[id_scores, ood_scores]
    assert got["auroc"] == pytest.approx(100 * roc_auc_score(is_id, scores), abs=1e-10)
    assert got["aupr_in"] == pytest.approx(100 * average_precision_score(is_id, scores), abs=1e-10)
    assert got["aupr_out"] == pytest.approx(100 * average_precision_score(1 - is_id, -scores), abs=1e-10)
    # OoD accepted at 95 % ID recall (ID positive) ...
    assert got["fpr95_id_recall"] == pytest.approx(100 * fpr_by_scan(id_scores, ood_scores), abs=1e-10)
    # ... and ID rejected at 95 % OoD recall (OoD positive, ranked by the negated score)
    assert got["fpr95_ood_recall"] == pytest.approx(100 * fpr_by_scan(-ood_scores, -id_scores), abs=1e-10)
    assert auroc(id_scores, ood_scores) == got["auroc"]


@pytest.mark.parametrize(("id_scores", "ood_scores"), cases())
def test_the_ood_positive_fpr95_is_pytorch_oods(id_scores, ood_scores):
    # pytorch-ood: larger outlier score = more OoD, labels < 0 mark OoD (the positive class)
    outlier = torch.as_tensor(np.r_[-id_scores, -ood_scores])
    labels = torch.as_tensor(np.r_[np.zeros(len(id_scores)), -np.ones(len(ood_scores))]).long()
    expected = 100 * float(fpr_at_tpr(outlier, labels, tpr=0.95))
    assert ood_metrics(id_scores, ood_scores)["fpr95_ood_recall"] == pytest.approx(expected, abs=1e-10)


def test_the_two_fpr95_conventions_differ_and_perfect_separation_gives_the_bounds():
    rng = np.random.default_rng(1)
    id_scores, ood_scores = rng.normal(1.0, 1.0, 2000), rng.normal(0.0, 3.0, 2000)  # OoD spread wider than ID
    got = ood_metrics(id_scores, ood_scores)
    assert abs(got["fpr95_id_recall"] - got["fpr95_ood_recall"]) > 10
    perfect = ood_metrics(np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0]))
    assert perfect == {"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0, "fpr95_id_recall": 0.0,
                       "fpr95_ood_recall": 0.0}
    inverted = ood_metrics(np.array([-1.0, 0.0]), np.array([2.0, 3.0, 4.0]))
    assert inverted["auroc"] == 0.0 and inverted["fpr95_id_recall"] == 100.0


def test_group_means_average_the_sets_of_each_group():
    id_scores = np.arange(10.0)
    per_set = {"near/a": ood_metrics(id_scores, np.arange(5.0)), "far/b": ood_metrics(id_scores, -np.ones(3)),
               "far/c": ood_metrics(id_scores, np.arange(3.0) + 4)}
    means = group_means(per_set, {key: key.split("/")[0] for key in per_set})
    assert means["near"] == per_set["near/a"]
    assert means["far"]["auroc"] == pytest.approx((per_set["far/b"]["auroc"] + per_set["far/c"]["auroc"]) / 2)


@pytest.mark.parametrize(("id_scores", "ood_scores", "message"), [
    (np.array([]), np.array([1.0]), "1-D scores of ID and OoD"),
    (np.array([1.0, np.nan]), np.array([1.0]), "NaN/Inf"),
    (np.ones((2, 2)), np.array([1.0]), "1-D scores"),
])
def test_bad_scores_are_refused_with_one_line(id_scores, ood_scores, message):
    with pytest.raises(DataError, match=message):
        ood_metrics(id_scores, ood_scores)


@pytest.mark.parametrize(("id_scores", "ood_scores"), list(cases()))
def test_resampled_metrics_equal_the_metrics_of_the_resampled_arrays(id_scores, ood_scores):
    """What the bootstrap CIs rest on: counting how often each example is drawn gives, for every metric, what
    ood_metrics gives on the resampled arrays themselves (ties included); counts of one give ood_metrics."""
    rng = np.random.default_rng(1)
    id_rows = rng.integers(0, len(id_scores), (6, len(id_scores)))
    ood_rows = rng.integers(0, len(ood_scores), (6, len(ood_scores)))
    id_counts = np.stack([np.bincount(r, minlength=len(id_scores)) for r in id_rows])
    ood_counts = np.stack([np.bincount(r, minlength=len(ood_scores)) for r in ood_rows])
    got = resampled_ood_metrics(id_scores, ood_scores, id_counts, ood_counts)
    for i in range(6):
        expected = ood_metrics(id_scores[id_rows[i]], ood_scores[ood_rows[i]])
        assert {m: got[m][i] for m in METRICS} == pytest.approx(expected, abs=1e-9)
    ones = resampled_ood_metrics(id_scores, ood_scores, np.ones((1, len(id_scores))), np.ones((1, len(ood_scores))))
    assert {m: ones[m][0] for m in METRICS} == pytest.approx(ood_metrics(id_scores, ood_scores), abs=1e-12)
    with pytest.raises(DataError, match="do not match"):
        resampled_ood_metrics(id_scores, ood_scores, id_counts[:, :-1], ood_counts)
