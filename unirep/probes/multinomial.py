"""The linear probe's objective, sklearn's multinomial logistic regression scaled by 1 / (C n) (unirep.probes.linear,
module docstring), with its gradient written by hand: two matrix products over the data per evaluation, no
autograd tape. `problem` is the probe's standardised problem (X (n, D), y label indices,
classes); theta = [W (classes*D, row-major), b].

The logits are normalised transposed, (classes, n), over their first dimension: torch's CPU log_softmax is fast
along contiguous rows of many entries and slow along short ones (one thread, Intel Xeon: 16,000 x 10 logits
2.6 ms along dim 1, 0.11 ms transposed along dim 0; 40,000 x 100 3.6 against 3.2 ms), and the gradient product
then reads the residual (classes, n) as stored. With `WIDE_LOGITS` classes or more the product itself is W X';
with fewer it is X W' + b (`linear`) copied transposed: MKL's skinny products run faster that way
(whole evaluation, 1 thread, Intel Xeon: 16,000 x 512 x 10 7.2-7.7 -> 5.3-5.8 ms, 1,000 x 1,280 x 10 1.20 -> 0.83
ms), while on 40,000 x 512 x 100 W X' is the faster (73-78 against 86-94 ms).

Which BLAS runs the products on CPU (`probe_blas`): torch's MKL on an Intel CPU, numpy's OpenBLAS on others. MKL
dispatches its fast kernels by CPU vendor: on the AMD EPYC development machine, one thread, its float32 GEMM ran
the 40,000 x 512 x 100 logits product at 32 GFLOP/s against OpenBLAS's 51 (float64: 15 against 28) and a whole
evaluation took 265 ms instead of 195 (the layout before the one above); on an Intel Xeon (AVX-512) a whole
evaluation in the layouts above, one thread, took 73 ms with MKL against 108 with OpenBLAS on those shapes and 5.8
against 10.7 ms on Fashion-MNIST's 16,000 x 512 x 10 (`benchmarks/probe_vs_sklearn.py`'s shapes).
`UNIREP_PROBE_BLAS=numpy|torch` overrides the choice (e.g. to run the same kernels on two machines). Both share the
tensors' memory (no copy); on a GPU the products stay in torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from unirep.errors import ConfigError
from unirep.probes.lbfgs import Objective
from unirep.runtime import cpu_info

BLAS_CHOICES = ("numpy", "torch")
WIDE_LOGITS = 32  # classes from which the logits product is W X' (module docstring)


@functools.cache
def probe_blas() -> str:
    """"torch" (MKL) or "numpy" (OpenBLAS): the BLAS of the probe's CPU products (module docstring)."""
    chosen = os.environ.get("UNIREP_PROBE_BLAS", "").strip().lower()
    if chosen and chosen not in BLAS_CHOICES:
        raise ConfigError(f"UNIREP_PROBE_BLAS={chosen!r} is not a BLAS the probe knows: use 'numpy' or 'torch', "
                          "or unset it for the default (torch's MKL on Intel CPUs, numpy's OpenBLAS elsewhere)")
    if chosen:
        return chosen
    return "torch" if torch.backends.mkl.is_available() and cpu_info("vendor_id") == "GenuineIntel" else "numpy"


@contextlib.contextmanager
def blas_threads_only(device: torch.device) -> Iterator[None]:
    """Within: torch's own CPU ops on one thread when the products run on numpy's BLAS (`matmul_into`, where a
    solve spends its time), so that BLAS has the cores to itself. Why: torch's OpenMP workers spin-wait between
    parallel regions and OpenBLAS's threads wait the same way, so with both pools at the core count each stalls
    the other. One linear-probe selection (EfficientNet-Lite0 features of textile-defects, 2-core AMD EPYC, idle):
    79.8 s with both pools at 2 threads, 26.8 s with both at 1, 25.0 s with torch at 2 and OpenBLAS at 1, 22.1 s
    with torch at 1 and OpenBLAS at 2. The probe's own torch ops are elementwise passes and small products. With
    torch's MKL (`probe_blas`) the products run in torch's own pool: nothing to change. No effect off the CPU."""
    if device.type != "cpu" or probe_blas() == "torch":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b (2-D, plain or transposed views), with `probe_blas`'s BLAS on CPU."""
    if out.device.type == "cpu" and probe_blas() == "numpy":
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
    else:
        torch.mm(a, b, out=out)
    return out


def linear(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F.linear(X, W, b) = X W' + b, through `matmul_into` (numpy's BLAS on CPU)."""
    return matmul_into(X, W.T, X.new_empty(X.shape[0], W.shape[0])).add_(b)


def multinomial_objective(problem: Any, l2: float) -> Objective:
    """theta = [W (classes*D, row-major), b] -> (mean CE + l2/2 ||W||^2, gradient), gradient written by hand:
    one logits matmul and one gradient matmul per evaluation, no autograd tape; logits (classes, n)."""
    X, y = problem.X, problem.y
    n, dim = X.shape
    n_weights = len(problem.classes) * dim
    rows, labels = torch.arange(n, device=X.device), y[None, :]
    wide = len(problem.classes) >= WIDE_LOGITS

    def objective(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        W, b = theta[:n_weights].view(-1, dim), theta[n_weights:]
        if wide:
            logits = matmul_into(W, X.T, X.new_empty(W.shape[0], n)).add_(b[:, None])
        else:
            logits = linear(X, W, b).T.contiguous()
        # log_softmax is one fused pass (logsumexp and the subtraction took 1.7x as long on 40,000 x 100).
        log_probabilities = torch.log_softmax(logits, dim=0)
        # Sums in float64: L-BFGS compares losses that differ in the 7th digit near convergence.
        data_loss = -log_probabilities.gather(0, labels).sum(dtype=torch.float64)
        loss = data_loss / n + 0.5 * l2 * W.square().sum(dtype=torch.float64)
        residual = log_probabilities.exp_()  # softmax, in place
        residual[y, rows] -= 1.0
        grad = torch.empty_like(theta)
        weight_grad = matmul_into(residual, X, grad[:n_weights].view(-1, dim))
        weight_grad.mul_(1.0 / n).add_(W, alpha=l2)
        torch.sum(residual, dim=1, out=grad[n_weights:])
        grad[n_weights:] /= n
        return float(loss), grad

    return objective


__all__ = [
    "BLAS_CHOICES", "WIDE_LOGITS", "blas_threads_only", "linear", "matmul_into", "multinomial_objective", "probe_blas",
]
