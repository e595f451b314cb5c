"""The linear probe's problem (unirep.probes.linear): standardised features on the solver's device and dtype, in
the row space of the training rows when they are fewer than the dimensions, and the Kronecker-factored curvature
that preconditions its L-BFGS solves."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from unirep.probes.base import ProbeInputError
from unirep.probes.multinomial import matmul_into

# float64 gave the same iteration counts on raw pixels (D = 3072), 1.3x slower; it is the fallback when float32
# fails (`_eigh_with_fallback`).
EIGH_DTYPE = torch.float32
# Relative spread below which a feature column is a constant up to float32 rounding (`_Problem.build`).
FLOAT32_SPREAD = 1e-5


class _Problem:
    """Standardised features, label indices and the standardisation, on the solver's device and dtype.

    Row space (`build(row_space=True)`, the probe's default): with fewer rows than dimensions (n < D), the features
    are the coordinates of the standardised rows in an orthonormal basis Q (D x n) of their span, X Q, and the
    weights live in that basis: the classifier is W Q' in the standardised space (`lift`). The same problem,
    exactly: the L2 minimiser lies in the rows' span (the representer theorem: the loss sees W only through X W',
    and any part of W orthogonal to the rows only adds to the penalty), ||W Q'|| = ||W||, and L-BFGS and the
    preconditioner are equivariant under the rotation. Why: an evaluation costs n * n instead of n * D per class,
    and the preconditioner's feature side is an n x n eigendecomposition instead of D x D. Raw pixels at 32 px
    (D = 3,072) on sklearn-digits (n = 897): the whole selection 58.2 s -> 20.8 s (1 thread), where the D x D
    preconditioner (its eigh and its application in every iteration) had been 75 % of it. The stopping rule is
    the standardised space's (`largest_gradient`: the largest entry of the lifted gradient), so `tol` keeps
    sklearn's meaning.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, classes: np.ndarray, mean: torch.Tensor, scale: torch.Tensor,
                 basis: torch.Tensor | None = None):
        self.X, self.y, self.classes, self.mean, self.scale, self.basis = X, y, classes, mean, scale, basis

    @classmethod
    def build(
        cls, X: np.ndarray, y: np.ndarray, classes: np.ndarray, dtype: torch.dtype, device: torch.device,
        moments: tuple[np.ndarray, np.ndarray] | None = None, row_space: bool = False,
    ) -> _Problem:
        """The problem of fitting (X, y); `moments`: X's column (mean, variance) in float64 when already known;
        `row_space`: solve in the rows' span when there are fewer rows than dimensions (class docstring)."""
        X = np.asarray(X)  # validated (N, D) finite features and (N,) labels: Probe.fit / select
        if len(classes) < 2:
            raise ProbeInputError(f"linear probe needs at least 2 classes in the fitting data, got {len(classes)} "
                                  "class: give it labelled examples of every class of the task")
        # Mean/std in float64 so float32 features with large offsets standardise exactly.
        if moments is None:
            moments = (X.mean(axis=0, dtype=np.float64), X.var(axis=0, dtype=np.float64))
        mean64, scale64 = moments[0], np.sqrt(moments[1])
        # Constant columns, and columns whose spread is float32 rounding of a constant (relative spread below 1e-5,
        # ~80 float32 ulps): standardising those would blow rounding noise (another machine's) up to unit variance.
        constant = scale64 < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean64))
        scale64[constant | (scale64 < FLOAT32_SPREAD * np.abs(mean64))] = 1.0
        mean = torch.as_tensor(mean64, dtype=dtype, device=device)
        scale = torch.as_tensor(scale64, dtype=dtype, device=device)
        features = (_as_tensor(X, mean) - mean).div_(scale)
        basis = _row_basis(features) if row_space and features.shape[0] < features.shape[1] else None
        if basis is not None:
            features = matmul_into(features, basis, features.new_empty(features.shape[0], basis.shape[1]))
        labels = torch.as_tensor(np.searchsorted(classes, y), dtype=torch.long, device=device)
        problem = cls(features, labels, classes, mean, scale, basis)
        problem.moments = moments
        return problem

    @classmethod
    def for_refit(
        cls, train: _Problem, val_X: torch.Tensor, X: np.ndarray, y: np.ndarray, dtype: torch.dtype,
        device: torch.device, row_space: bool = False,
    ) -> _Problem:
        """The refit's problem on X = train rows then val rows, from what the sweep already computed: `train`'s
        column moments combined with the val rows' (Chan et al.'s pairwise update, float64), and, where `train`
        built its preconditioner, the feature Gram moved to the new standardisation from `train`'s and the val
        rows' (`val_X`, standardised as `train`): a pass over the val rows instead of two over all (the Gram
        alone is n * D^2; 0.5 of the gmm50k refit's 6 s). The same problem as `build` up to float64 rounding."""
        n_train, n_val = train.X.shape[0], len(X) - train.X.shape[0]
        val_rows = np.asarray(X)[n_train:]
        train_mean, train_var = train.moments
        val_mean, val_var = val_rows.mean(axis=0, dtype=np.float64), val_rows.var(axis=0, dtype=np.float64)
        delta, n = val_mean - train_mean, n_train + n_val
        moments = (train_mean + delta * (n_val / n),
                   (n_train * train_var + n_val * val_var + delta**2 * (n_train * n_val / n)) / n)
        problem = cls.build(X, y, train.classes, dtype, device, moments=moments, row_space=row_space)
        if hasattr(train, "_preconditioner") and train.basis is None and problem.basis is None:
            problem._preconditioner = _KroneckerPreconditioner(problem, _moved_gram(train, val_X, problem))
        return problem

    def preconditioner(self) -> _KroneckerPreconditioner:
        """The problem's L-BFGS preconditioner, shared by the solves of a sweep (built lazily)."""
        if not hasattr(self, "_preconditioner"):
            self._preconditioner = _KroneckerPreconditioner(self)
        return self._preconditioner

    def standardise(self, X: np.ndarray) -> torch.Tensor:
        """Rows in the problem's coordinates: standardised, and in the row-space basis if it has one."""
        standardised = (_as_tensor(np.asarray(X), self.mean) - self.mean).div_(self.scale)
        return standardised if self.basis is None else self.project(standardised)

    def lift(self, W: torch.Tensor) -> torch.Tensor:
        """Weights (classes, dim) in the problem's coordinates -> the standardised space (classes, D)."""
        return lift(W, self.basis)

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """Weights or rows (m, D) of the standardised space -> the problem's coordinates (m, dim): their
        components in the row space (exact for the problem's minimiser and gradients, which lie in it)."""
        return W if self.basis is None else matmul_into(W, self.basis, W.new_empty(W.shape[0], self.basis.shape[1]))

    def largest_gradient(self, grad: torch.Tensor) -> float:
        """max |gradient entry| in the standardised space, the solver's size of a gradient (sklearn's `tol`)."""
        if self.basis is None:
            return float(grad.abs().max())
        n_weights = len(self.classes) * self.X.shape[1]
        lifted = self.lift(grad[:n_weights].view(len(self.classes), -1))
        return max(float(lifted.abs().max()), float(grad[n_weights:].abs().max()))

    def gradient_within(self, grad: torch.Tensor, tol: float) -> bool:
        """`largest_gradient(grad) <= tol`, decided on bounds where they suffice: a lifted weight row has the
        row's 2-norm (Q is orthonormal), and its largest entry lies between that norm / sqrt(D) and the norm.
        Why: lifting costs classes * n * D, more than an evaluation of a row-space problem with few classes."""
        if self.basis is None:
            return float(grad.abs().max()) <= tol
        n_weights = len(self.classes) * self.X.shape[1]
        if float(grad[n_weights:].abs().max()) > tol:
            return False
        row_norm = float(grad[:n_weights].view(len(self.classes), -1).norm(dim=1).max())
        if row_norm <= tol or row_norm > tol * math.sqrt(self.basis.shape[0]):
            return row_norm <= tol
        return self.largest_gradient(grad) <= tol


def lift(W: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Weights (m, dim) in a row-space basis's coordinates -> the standardised space (m, D): W Q'; unchanged
    without a basis (None)."""
    return W if basis is None else matmul_into(W, basis.T, W.new_empty(W.shape[0], basis.shape[0]))


def _row_basis(features: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (D, n) of the span of the n rows of `features` (n < D): Householder QR of X' in
    float64 (orthonormal to float64 rounding whatever X's conditioning: a Gram eigendecomposition loses the small
    directions), in the features' dtype. A rank-deficient X gets basis vectors its rows do not use: their
    coordinates are ~0 for every row, so the penalty keeps their weights at ~0, as in the standardised space."""
    basis, _ = torch.linalg.qr(features.T.double(), mode="reduced")
    return basis.to(features.dtype)


def _moved_gram(train: _Problem, val_X: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """`problem`'s feature Gram X'X / n from `train`'s and the val rows' (`val_X`, in `train`'s standardisation):
    a row z of `train`'s space is ratio * (z + shift) in `problem`'s (ratio = scale / scale', shift = (mean -
    mean') / scale), so X'X = diag(ratio) [Z'Z + V'V + s shift' + shift s' + n shift shift'] diag(ratio), s the
    column sums of Z and V. In float64, then the solver's dtype."""
    n_train, n = train.X.shape[0], problem.X.shape[0]
    ratio = (train.scale / problem.scale).double()
    shift = ((train.mean - problem.mean) / train.scale).double()
    val_gram = matmul_into(val_X.T, val_X, val_X.new_empty(val_X.shape[1], val_X.shape[1])).double()
    sums = train.X.sum(dim=0, dtype=torch.float64) + val_X.sum(dim=0, dtype=torch.float64)
    gram = train.preconditioner().feature_gram.double() * n_train + val_gram
    gram += torch.outer(sums, shift) + torch.outer(shift, sums) + n * torch.outer(shift, shift)
    return (ratio[:, None] * gram * ratio[None, :] / n).to(problem.X.dtype)


class _KroneckerPreconditioner:
    """The initial inverse-Hessian estimate of the L-BFGS solves of one problem: v -> M^-1 v with

        M = S (x) G + l2 * I   on the weights,   G = X'X / n,   S = mean_i (diag(p_i) - p_i p_i'),

    the Kronecker-factored Gauss-Newton Hessian (the K-FAC approximation of a softmax layer): G couples the
    features, S (classes x classes, from the softmax probabilities p_i at the iterate where it was built) couples
    the classes. Applied through the eigendecompositions of both, M^-1 v costs two small matrix products per side.
    The biases get 1 / mean(diag S).

    Why: backbone features are strongly correlated, so at large C the objective is badly conditioned for plain
    L-BFGS (sklearn's solver); starting from M cuts the iterations several-fold for the same minimiser (only
    the path changes). It replaced a class-averaged form (every class's weights preconditioned by one
    A = X' diag(w) X / n, rebuilt at n * D^2 each time), which ignores how the classes couple: with the path
    prediction, the 100-class benchmark sweep takes 43 iterations with the Kronecker form against 48, the
    10-class one 199-210 against 274, and a rebuild costs one logits pass instead of an n * D^2 product.

    G is built once per problem (n * D^2 and a D x D eigh) from all rows: A estimated on a 4096-row sample got
    its small eigenvalues wrong and preconditioned worse than nothing, so the feature side stays exact. S follows
    the iterate: it is rebuilt after every `REBUILD_AFTER` iterations, within a solve or across the solves of a
    sweep, from the probabilities of at most `CLASS_CURVATURE_ROWS` evenly spread rows (an average of bounded
    classes x classes terms, which a sample estimates well: on 4,096 of 40,000 rows the 100-class sweep took 42
    iterations, as with all rows, at a fifth of the rebuild cost); a change of C alone shifts the eigenvalues of
    M, which is free.
    """

    # Rebuilding S after 1, 3 or 5 iterations took the 100-class sweep 50, 44 and 43 iterations, and after 3 or 10
    # the 10-class one 199 and 210: a fresher S does not pay.
    REBUILD_AFTER = 5
    CLASS_CURVATURE_ROWS = 4096

    def __init__(self, problem: _Problem, feature_gram: torch.Tensor | None = None):
        self.problem = problem
        self.n_classes, self.dim = len(problem.classes), problem.X.shape[1]
        X = problem.X
        with torch.no_grad():
            if feature_gram is None:  # G = X'X / n; given: the refit's, moved from the sweep's (`_Problem.for_refit`)
                feature_gram = matmul_into(X.T, X, X.new_empty(self.dim, self.dim)).div_(X.shape[0])
            self.feature_gram = feature_gram
            values, vectors = _eigh_with_fallback(feature_gram)
        self.feature_values, self.feature_vectors = values.clamp_(min=0).to(X.dtype), vectors.to(X.dtype)
        self.iterations_since_build = math.inf
        self.l2 = math.nan
        self.new_l2 = True

    def start_solve(self, l2: float) -> _KroneckerPreconditioner:
        self.l2, self.new_l2 = l2, True
        return self

    def __call__(self, theta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Called by `minimize_lbfgs` before each iteration: a new M^-1 to use from now on, or None to keep it."""
        if self.iterations_since_build >= self.REBUILD_AFTER:
            self._build(theta)
        elif not self.new_l2:
            self.iterations_since_build += 1
            return None
        self.iterations_since_build += 1
        self.new_l2 = False
        return self._inverse()

    def inverse_at(self, theta: torch.Tensor) -> _KroneckerInverse:
        """M^-1 with the class curvature built at `theta`: the selection certificate's Newton-step estimate."""
        self._build(theta)
        return self._inverse()

    def _inverse(self) -> _KroneckerInverse:
        inverse = 1.0 / (self.class_values[:, None] * self.feature_values[None, :] + self.l2)
        return _KroneckerInverse(self.class_vectors, self.feature_vectors, inverse, self.bias_inverse)

    def _build(self, theta: torch.Tensor) -> None:
        X, n_weights = self.problem.X, self.n_classes * self.dim
        X = X[:: max(1, X.shape[0] // self.CLASS_CURVATURE_ROWS)]  # evenly spread rows, whatever the data's order
        with torch.no_grad():
            logits = F.linear(X, theta[:n_weights].view(self.n_classes, self.dim), theta[n_weights:])
            probabilities = torch.softmax(logits, dim=1)
            mean_probabilities = probabilities.mean(dim=0)
            class_curvature = torch.diag(mean_probabilities) - probabilities.T @ probabilities / X.shape[0]
            values, vectors = _eigh_with_fallback(class_curvature)
        self.class_values = values.clamp_(min=0).to(X.dtype)
        self.class_vectors = vectors.to(X.dtype)
        self.bias_inverse = 1.0 / max(float(class_curvature.diagonal().mean()), 1e-6)
        self.iterations_since_build = 0


class _KroneckerInverse:
    """v -> M^-1 v for one build of `_KroneckerPreconditioner`: rotate the weights into the eigenbases of both
    factors, scale by 1 / (eigenvalue products + l2), rotate back; the biases are scaled."""

    def __init__(self, class_vectors: torch.Tensor, feature_vectors: torch.Tensor, inverse: torch.Tensor,
                 bias_inverse: float):
        self.class_vectors, self.feature_vectors = class_vectors, feature_vectors
        self.inverse, self.bias_inverse = inverse, bias_inverse
        self.n_classes, self.dim = inverse.shape

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.with_curvature(v)[0]

    def with_curvature(
        self, v: torch.Tensor, u: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(M^-1 v, u' M^-1 u), the second from u's rotation alone (sum of inverse * rotated u squared), rotated
        in the same product as v's. Why: L-BFGS needs both every iteration (the direction and the scale y'M^-1 y
        of the newest pair), and with D x D feature vectors (raw pixels, D = 3,072) a rotation of a few class
        rows is bound by reading those 38 MB: one pass for both instead of a pass for each and one more to rotate
        u back (raw pixels on Fashion-MNIST, 5,000 x 3,072: 29 of the selection's 75 s went to these passes)."""
        n_weights = self.n_classes * self.dim
        rows = v[:n_weights].view(self.n_classes, self.dim)
        if u is not None:
            rows = torch.cat([rows, u[:n_weights].view(self.n_classes, self.dim)])
        rotated = matmul_into(rows, self.feature_vectors, rows.new_empty(rows.shape))
        out = torch.empty_like(v)
        in_eigenbasis = self.class_vectors.T @ rotated[: self.n_classes]
        back = matmul_into(in_eigenbasis.mul_(self.inverse), self.feature_vectors.T,
                           v.new_empty(self.n_classes, self.dim))
        torch.mm(self.class_vectors, back, out=out[:n_weights].view(self.n_classes, self.dim))
        torch.mul(v[n_weights:], self.bias_inverse, out=out[n_weights:])
        if u is None:
            return out, None
        u_rotated = self.class_vectors.T @ rotated[self.n_classes :]
        curvature = (u_rotated.square_().mul_(self.inverse).sum(dtype=torch.float64)
                     + u[n_weights:].square().sum(dtype=torch.float64) * self.bias_inverse)
        return out, curvature.to(v.dtype)


def _eigh_with_fallback(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eigh in EIGH_DTYPE, redone in float64 when float32 LAPACK fails: it raises on some nearly repeated
    eigenvalues and silently returns NaN on others (seen with a source network whose features have 115 of
    256 columns constant)."""
    try:
        values, vectors = torch.linalg.eigh(matrix.to(EIGH_DTYPE))
        if torch.isfinite(values).all() and torch.isfinite(vectors).all():
            return values, vectors
    except torch.linalg.LinAlgError:
        pass
    return torch.linalg.eigh(matrix.double())


def _as_tensor(X: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(X), device=like.device).to(like.dtype)


__all__ = ["EIGH_DTYPE", "FLOAT32_SPREAD", "lift"]
