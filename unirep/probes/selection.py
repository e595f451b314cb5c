"""What the linear probe's noise-stable selection (unirep.probes.linear, module docstring) needs besides the
solver: how far a solve is from its minimiser on each val prediction, the score that counts the uncertain ones
wrong, and what one val example is worth in metric points."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from unirep.metrics import Metric
from unirep.probes.base import predictions_for_metric
from unirep.probes.multinomial import linear


def margin_errors(
    problem: Any, val_X: torch.Tensor, theta: torch.Tensor, grad: torch.Tensor, C: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The val logits at `theta`, each val example's top-two logit margin there, and how far the remaining
    distance to the minimiser moves that margin, estimated by the Newton step M^-1 g with the solver's
    Kronecker-factored curvature M (built at `theta`, with the penalty of C): the a-posteriori error estimate of
    the solve."""
    n_classes = len(problem.classes)
    n_weights = n_classes * problem.X.shape[1]
    step = problem.preconditioner().start_solve(1.0 / (C * problem.X.shape[0])).inverse_at(theta)(grad)
    with torch.no_grad():
        logits = linear(val_X, theta[:n_weights].view(n_classes, -1), theta[n_weights:])
        moves = linear(val_X, step[:n_weights].view(n_classes, -1), step[n_weights:])
        top2 = logits.topk(2, dim=1)
        margins = (top2.values[:, 0] - top2.values[:, 1]).double()
        errors = (moves.gather(1, top2.indices[:, :1]) - moves.gather(1, top2.indices[:, 1:])).abs().squeeze(1)
    return logits, margins, errors.double()


def penalty_bound(val_X: torch.Tensor, grad: torch.Tensor, n_weights: int, l2: float) -> torch.Tensor:
    """Each val example's largest possible margin change on the way to the minimiser's weights, from the penalty
    alone: the objective minimised over the biases is l2-strongly convex in W, so ||W - W*||_F <= ||grad_W|| / l2,
    and a top-two margin (w_k - w_j)'x moves by at most sqrt(2) ||W - W*||_F ||x|| (the biases' own remaining
    move is left to `margin_errors`). Rigorous where the Newton estimate is not: at large C on nearly separable
    data the objective is flat along directions the training rows barely see, and two solver paths stopped at the
    same gradient size (1e-7) there were ~20 logits apart on a val example the Newton estimate put within 0.05
    (EfficientNet-Lite0 on textile-defects, C = 1,778). `val_X` in the problem's coordinates (a row space's
    norms are those of the rows' in-span parts, the only part W - W* acts on)."""
    radius = float(grad[:n_weights].double().norm()) / l2
    return math.sqrt(2.0) * radius * val_X.double().norm(dim=1)


def certified_score(
    metric: Metric, y: np.ndarray, logits: torch.Tensor, uncertain: torch.Tensor, classes: np.ndarray
) -> tuple[float, int]:
    """The val score counting each `uncertain` prediction as wrong (the worst case), and how many there are.
    Ranking metrics (mAP) are scored as they are."""
    scores = logits.cpu().numpy()
    predictions = predictions_for_metric(metric, scores, classes)
    uncertain = uncertain.cpu().numpy()
    if metric.needs_scores or not uncertain.any():
        return float(metric(y, predictions)), 0 if metric.needs_scores else int(uncertain.sum())
    runner_up = classes[np.argsort(scores, axis=1)[:, -2]]
    worst = np.where(uncertain & (predictions == y), runner_up, predictions)  # an uncertain right one: wrong
    return float(metric(y, worst)), int(uncertain.sum())


def one_example_points(metric: Metric, y: np.ndarray) -> float:
    """The largest change of `metric` (points) one val example can make: 100 / n for top-1, 100 / (classes *
    smallest class) for mean per-class accuracy."""
    if metric == Metric.MEAN_PER_CLASS:
        _, counts = np.unique(y, return_counts=True)
        return 100.0 / (len(counts) * counts.min())
    return 100.0 / len(y)


__all__ = ["certified_score", "margin_errors", "one_example_points", "penalty_bound"]
