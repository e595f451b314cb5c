"""The linear probe's objective, sklearn's multinomial logistic regression scaled by 1 / (C n) (unirep.probes.linear,
module docstring), with its gradient written by hand: two matrix products over the data per evaluation, no
autograd tape. `problem` is the probe's standardised problem (X (n, D), y label indices,
classes); theta = [W (classes*D, row-major), b]."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from unirep.probes.lbfgs import Objective


def multinomial_objective(problem: Any, l2: float) -> Objective:
    """theta = [W (classes*D, row-major), b] -> (mean CE + l2/2 ||W||^2, gradient), gradient written by hand:
    one logits matmul and one gradient matmul per evaluation, no autograd tape."""
    X, y = problem.X, problem.y
    n, dim = X.shape
    n_weights = len(problem.classes) * dim
    rows = torch.arange(n, device=X.device)

    def objective(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        W, b = theta[:n_weights].view(-1, dim), theta[n_weights:]
        logits = F.linear(X, W, b)
        log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
        # Sums in float64: L-BFGS compares losses that differ in the 7th digit near convergence.
        data_loss = log_norm.sum(dtype=torch.float64) - logits[rows, y].sum(dtype=torch.float64)
        loss = data_loss / n + 0.5 * l2 * W.square().sum(dtype=torch.float64)
        residual = logits.sub_(log_norm).exp_()  # softmax, in place
        residual[rows, y] -= 1.0
        grad = torch.empty_like(theta)
        torch.addmm(W, residual.T, X, beta=l2, alpha=1.0 / n, out=grad[:n_weights].view(-1, dim))
        torch.sum(residual, dim=0, out=grad[n_weights:])
        grad[n_weights:] /= n
        return float(loss), grad

    return objective



__all__ = ["multinomial_objective"]
