"""A linear probe solution (unirep.probes.linear): weights and biases in the standardised space they were solved
in, the data terms of the objective there, and the L-BFGS curvature pairs a later solve can start from, in that
space or mapped to another standardisation (the refit's)."""

from __future__ import annotations

import math
from typing import Any

import torch

from unirep.probes.base import SweepPoint
from unirep.probes.lbfgs import CurvaturePairs
from unirep.probes.linear_problem import lift
from unirep.probes.multinomial import multinomial_objective


class _Solution:
    """Weights (classes, D) and biases in the standardised space of (`mean`, `scale`). `data_terms` are the
    unpenalised loss and its gradient at this point on the problem it was solved on (None if unknown): the
    next C of a sweep adds its own penalty to them instead of evaluating the objective again."""

    def __init__(
        self, W: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor,
        data_terms: tuple[float, torch.Tensor] | None = None, basis: torch.Tensor | None = None,
    ):
        self.W, self.b, self.mean, self.scale, self.data_terms = W, b, mean, scale, data_terms
        self.basis = basis  # the problem's row-space basis (`_Problem`): W is in its coordinates; None: standardised
        self.tight = False  # solved to the probe's reselect_tol (LinearProbe._solve with tight=True)
        # The last L-BFGS pairs of its tight solve, penalty removed: (steps, data-term gradient changes), or None.
        self.curvature: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def keep_curvature(self, pairs: CurvaturePairs, l2: float) -> None:
        """Keep a solve's last curvature pairs with the penalty's part (l2 * step on the weights) removed, so
        that a solve with another penalty (`curvature_pairs`) or in another standardisation (`restandardised`)
        starts from them: the tight re-solve of a neighbouring C and the tight refit warm-start their L-BFGS
        inverse-Hessian estimate, not only their weights."""
        n_weights = self.W.numel()
        data_changes = [y.clone() for y in pairs.grad_changes]
        for step, change in zip(pairs.steps, data_changes):
            change[:n_weights].sub_(step[:n_weights], alpha=l2)
        self.curvature = (list(pairs.steps), data_changes)

    def borrowing_curvature(self, donor: _Solution) -> _Solution:
        """This point with `donor`'s kept pairs (a tight solve at a neighbouring C on the same problem)."""
        borrowed = _Solution(self.W, self.b, self.mean, self.scale, self.data_terms, self.basis)
        borrowed.curvature = donor.curvature
        return borrowed

    def curvature_pairs(self, l2: float) -> CurvaturePairs | None:
        """The kept pairs with penalty `l2` added back, those that still have positive curvature (L-BFGS's
        condition), for `minimize_lbfgs(pairs=...)`; empty if none were kept."""
        if self.curvature is None:
            return CurvaturePairs()
        n_weights = self.W.numel()
        pairs = CurvaturePairs()
        for step, data_change in zip(*self.curvature):
            change = data_change.clone()
            change[:n_weights].add_(step[:n_weights], alpha=l2)
            pairs.add(step, change)
        return pairs

    def objective_at(self, l2: float) -> tuple[float, torch.Tensor] | None:
        """(objective, gradient) here for penalty `l2`, from the stored data terms (no pass over the data)."""
        if self.data_terms is None:
            return None
        data_loss, data_grad = self.data_terms
        grad = data_grad.clone()
        grad[: self.W.numel()].add_(self.W.reshape(-1), alpha=l2)
        return data_loss + 0.5 * l2 * float(self.W.square().sum(dtype=torch.float64)), grad

    @classmethod
    def at(cls, problem: Any, W: torch.Tensor, b: torch.Tensor, objective: tuple[float, torch.Tensor],
           l2: float) -> _Solution:
        """(W, b) on `problem`, keeping its data terms: `objective` (value, gradient) with penalty `l2` removed."""
        data_terms = cls(W, b, problem.mean, problem.scale, objective).objective_at(-l2)
        return cls(W, b, problem.mean, problem.scale, data_terms, problem.basis)

    @classmethod
    def zeros(cls, problem: Any) -> _Solution:
        n_classes, dim = len(problem.classes), problem.X.shape[1]
        like = problem.mean
        return cls(like.new_zeros(n_classes, dim), like.new_zeros(n_classes), problem.mean, problem.scale,
                   basis=problem.basis)

    def restandardised(self, problem: Any) -> _Solution:
        """The same classifier expressed in `problem`'s standardisation (the refit on train+val has its own
        mean/std), so the warm start is exactly the selected solution, not a shifted one."""
        if self.W.shape[0] != len(problem.classes) or self.mean.shape != problem.mean.shape:
            return _Solution.zeros(problem)
        ratio, shift = problem.scale / self.scale, (problem.mean - self.mean) / self.scale
        W = lift(self.W, self.basis)  # in the standardised space; back into `problem`'s row space (if any) at the end
        b = self.b + W @ shift
        moved = _Solution(problem.project(W * ratio), b, problem.mean, problem.scale, basis=problem.basis)
        moved.tight = self.tight
        if self.curvature is not None:
            # theta' = A theta (W' = W * ratio, b' = b + W shift): steps map by A, gradients by A^-T, so the
            # pairs describe the same curvature of the same classifiers (the data term of another sample). Row
            # spaces: steps and gradient changes lift by Q' and project by Q' (both lie in the rows' span).
            n_weights, n_classes = self.W.numel(), W.shape[0]
            steps, changes = [], []
            for step, change in zip(*self.curvature):
                step_W = lift(step[:n_weights].view(n_classes, -1), self.basis)
                change_W = lift(change[:n_weights].view(n_classes, -1), self.basis)
                moved_step = problem.project(step_W * ratio)
                steps.append(torch.cat([moved_step.reshape(-1), step[n_weights:] + step_W @ shift]))
                moved_W = problem.project((change_W - change[n_weights:, None] * shift) / ratio)
                changes.append(torch.cat([moved_W.reshape(-1), change[n_weights:]]))
            moved.curvature = (steps, changes)
        return moved



def _release_curvature(points: list[SweepPoint], tight: dict[int, float], keep: tuple[int, ...]) -> None:
    """Drop the kept curvature pairs of the re-solved points other than `keep`: each holds 2 * history_size
    vectors of the weights' size, so a flat top of many Cs would otherwise hold that many times it."""
    for j in tight:
        if j not in keep:
            points[j].warm_start.curvature = None


def _path_prediction(
    problem: Any, path: list[tuple[float, _Solution]], C: float, previous: _Solution, tol: float
) -> _Solution | None:
    """A start for the solve at `C`: the last two solutions of the path extrapolated linearly in log C, if its
    objective at C is lower than the previous solution's; None when that one is better or already converged.

    Why: along the default grid (equal steps in log C) the weights move smoothly, so the extrapolation lands much
    closer to the new minimiser than the previous solution. Measured over the full 45-C sweep: gmm50k (100 classes)
    97 -> 48 iterations, fashion20k 512 -> 274. Costs one objective evaluation, so it is only tried when the
    previous solution does not already meet the tolerance at C.
    """
    l2 = 1.0 / (C * problem.X.shape[0])
    at_previous = previous.objective_at(l2)
    if len(path) < 2 or at_previous is None or problem.gradient_within(at_previous[1], tol):
        return None
    (log_c0, older), (log_c1, newer) = path[-2:]
    ratio = (math.log(C) - log_c1) / (log_c1 - log_c0)
    W = newer.W + ratio * (newer.W - older.W)
    b = newer.b + ratio * (newer.b - older.b)
    loss, grad = multinomial_objective(problem, l2)(torch.cat([W.reshape(-1), b]))
    if not loss < at_previous[0]:  # also rejects a non-finite extrapolation
        return None
    return _Solution.at(problem, W, b, (loss, grad), l2)
