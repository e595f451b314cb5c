"""The linear probe's objective, sklearn's multinomial logistic regression scaled by 1 / (C n) (unirep.probes.linear,
module docstring), with its gradient written by hand: two matrix products over the data per evaluation, no
autograd tape. `problem` is the probe's standardised problem (X (n, D), y label indices,
classes); theta = [W (classes*D, row-major), b].

On CPU the two products go through numpy's BLAS (OpenBLAS), not torch's (MKL): on the AMD EPYC development
machine, one thread, MKL's float32 GEMM ran the 40,000 x 512 x 100 logits product at 32 GFLOP/s against
OpenBLAS's 51 (float64: 15 against 28), and a whole objective evaluation took 195 ms instead of 265
(`benchmarks/probe_vs_sklearn.py`'s gmm50k shapes). Both share the tensors' memory (no copy); on a GPU the
products stay in torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from unirep.probes.lbfgs import Objective


@contextlib.contextmanager
def blas_threads_only(device: torch.device) -> Iterator[None]:
    """Within: torch's own CPU ops on one thread, so numpy's BLAS (`matmul_into`, where a solve spends its time)
    has the cores to itself. Why: torch's OpenMP workers spin-wait between parallel regions and OpenBLAS's
    threads wait the same way, so with both pools at the core count each stalls the other. One linear-probe
    selection (EfficientNet-Lite0 features of textile-defects, 2-core AMD EPYC, idle): 79.8 s with both pools at 2
    threads, 26.8 s with both at 1, 25.0 s with torch at 2 and OpenBLAS at 1, 22.1 s with torch at 1 and OpenBLAS
    at 2. The probe's own torch ops are elementwise passes and small products. No effect off the CPU."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b (2-D, any strides numpy's BLAS takes: plain and transposed views); numpy's BLAS on CPU."""
    if out.device.type == "cpu":
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
    else:
        torch.mm(a, b, out=out)
    return out


def linear(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F.linear(X, W, b) = X W' + b, through `matmul_into` (numpy's BLAS on CPU)."""
    return matmul_into(X, W.T, X.new_empty(X.shape[0], W.shape[0])).add_(b)


def multinomial_objective(problem: Any, l2: float) -> Objective:
    """theta = [W (classes*D, row-major), b] -> (mean CE + l2/2 ||W||^2, gradient), gradient written by hand:
    one logits matmul and one gradient matmul per evaluation, no autograd tape."""
    X, y = problem.X, problem.y
    n, dim = X.shape
    n_weights = len(problem.classes) * dim
    rows, labels = torch.arange(n, device=X.device), y[:, None]

    def objective(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        W, b = theta[:n_weights].view(-1, dim), theta[n_weights:]
        # log_softmax is one fused pass (logsumexp and the subtraction took 1.7x as long on 40,000 x 100).
        log_probabilities = torch.log_softmax(linear(X, W, b), dim=1)
        # Sums in float64: L-BFGS compares losses that differ in the 7th digit near convergence.
        data_loss = -log_probabilities.gather(1, labels).sum(dtype=torch.float64)
        loss = data_loss / n + 0.5 * l2 * W.square().sum(dtype=torch.float64)
        residual = log_probabilities.exp_()  # softmax, in place
        residual[rows, y] -= 1.0
        grad = torch.empty_like(theta)
        weight_grad = matmul_into(residual.T, X, grad[:n_weights].view(-1, dim))
        weight_grad.mul_(1.0 / n).add_(W, alpha=l2)
        torch.sum(residual, dim=0, out=grad[n_weights:])
        grad[n_weights:] /= n
        return float(loss), grad

    return objective


__all__ = ["blas_threads_only", "linear", "matmul_into", "multinomial_objective"]
