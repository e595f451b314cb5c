"""The L-BFGS pairs a tight solve passes on to the refit (`unirep.probes.linear_solution._Solution`): mapped to the
refit's standardisation they are the same classifiers' steps and the same loss's gradient changes there, computed
independently on the train rows standardised as the refit's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.probes.lbfgs import CurvaturePairs
from unirep.probes.linear_problem import _Problem
from unirep.probes.linear_solution import _Solution
from unirep.probes.multinomial import multinomial_objective

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def test_carried_pairs_are_the_same_steps_and_gradient_changes_in_the_refits_standardisation(digits):
    X_train, y_train = digits.X_train[:300].astype(np.float64), digits.y_train[:300]
    X_all = np.concatenate([X_train, digits.X_val[:100]])
    y_all = np.concatenate([y_train, digits.y_val[:100]])
    classes = np.unique(y_all)
    train = _Problem.build(X_train, y_train, classes, torch.float64, CPU)
    refit = _Problem.build(X_all, y_all, classes, torch.float64, CPU)
    # The train rows in the refit's standardisation: the train loss as a function of refit-space classifiers.
    train_in_refit = _Problem(refit.standardise(X_train), train.y, classes, refit.mean, refit.scale)
    n_classes, dim = len(classes), train.X.shape[1]
    rng = np.random.default_rng(0)
    thetas = [torch.from_numpy(rng.normal(scale=0.05, size=n_classes * (dim + 1))) for _ in range(6)]
    l2 = 1e-2

    def data_gradient(problem, theta):
        return multinomial_objective(problem, 0.0)(theta)[1]

    def solution(theta):
        W, b = theta[: n_classes * dim].view(n_classes, dim), theta[n_classes * dim :]
        return _Solution(W, b, train.mean, train.scale)

    def in_refit(theta):
        moved = solution(theta).restandardised(refit)
        return torch.cat([moved.W.reshape(-1), moved.b])

    pairs = CurvaturePairs()
    for older, newer in zip(thetas, thetas[1:]):
        step = newer - older
        change = data_gradient(train, newer) - data_gradient(train, older)
        change[: n_classes * dim] += l2 * step[: n_classes * dim]  # the penalised objective's pair
        assert pairs.add(step, change)
    carrier = solution(thetas[-1])
    carrier.keep_curvature(pairs, l2)
    moved = carrier.restandardised(refit)
    moved_steps, moved_changes = (torch.stack(rows) for rows in moved.curvature)
    for i, (older, newer) in enumerate(zip(thetas, thetas[1:])):
        torch.testing.assert_close(moved_steps[i], in_refit(newer) - in_refit(older), rtol=1e-10, atol=1e-12)
        expected = data_gradient(train_in_refit, in_refit(newer)) - data_gradient(train_in_refit, in_refit(older))
        torch.testing.assert_close(moved_changes[i], expected, rtol=1e-8, atol=1e-10)
    # the penalty of another C is added back for the refit's solve, pair by pair
    refit_pairs = moved.curvature_pairs(2 * l2)
    torch.testing.assert_close(torch.stack(refit_pairs.grad_changes)[:, : n_classes * dim],
                               moved_changes[:, : n_classes * dim] + 2 * l2 * moved_steps[:, : n_classes * dim])
