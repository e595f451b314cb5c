"""Multinomial logistic-regression probe (Kornblith et al. 2019): full-batch L-BFGS in torch, C swept on val.

The objective is scikit-learn's `LogisticRegression` (sklearn 1.9, lbfgs, multinomial, L2):

    C * sum_i CE(W x_i + b, y_i) + 0.5 * ||W||^2        (intercept b not penalised)

minimised here in the form sklearn's solver uses, divided by C * n:

    mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)

so the minimiser is the same and the stopping rule `max |gradient| <= tol` means the same as sklearn's `tol`
(its L-BFGS-B `gtol` is applied to this scaled objective). Features are standardised with the mean and std of
the data being fitted (train during the sweep, train+val for the refit); the weights live in that standardised
space. Weights are stored (classes, D) and applied with `F.linear`: that layout reaches sklearn's objective
about 2x faster than sklearn on CPU, while (D, classes) with `X @ W` is 5x slower (shared/OFFLINE.md).

The C sweep runs from the smallest C up, each solve warm-started on the regularisation path: from the previous
solution, or, when that is better, from the straight-line extrapolation (in log C) of the last two solutions
(`_path_prediction`), which halved the iterations of both benchmark problems. Each solve is L-BFGS
preconditioned with a Kronecker-factored curvature (`_KroneckerPreconditioner`): backbone features are strongly
correlated and many-class problems couple the classes, which makes large-C problems badly conditioned for plain
L-BFGS (sklearn's solver). With fewer training examples than dimensions (n < D), the problem is solved in the
span of the training rows (`row_space`, `unirep.probes.linear_problem._Problem`): the same minimiser, with n
coordinates instead of D, so evaluations and the preconditioner (an n x n eigendecomposition) follow the smaller
of n and D; every problem is then preconditioned by default.

Selection that float32 noise cannot flip (`reselect_margin`, `reselect_tol`). Val accuracy is a step function
of the weights, and a solve stopped at the loose `tol` lands wherever its L-BFGS path happens to stop: features
that agree to float32 noise (another CPU, another BLAS) take another path, move each C's val score by a few
val examples and, on a flat val curve, flip the chosen C (and the refit's test score, even at the same C). The
choice is therefore made on the exact minimisers' val scores, as far as they can matter:

1. the loose sweep scores every C (the recorded curve, cheap);
2. the near-best Cs are re-solved to `reselect_tol` (1e-7, scikit-learn's "solved tightly") from their loose
   solutions, in the probe's dtype (float32 reaches it: the solver accepts steps below the objective's
   rounding on their slope, `minimize_lbfgs(f_noise=...)`), and re-scored. Near-best: loose score within
   `reselect_margin` val examples of the best score so far (tight where known), widened by the largest
   loose-vs-tight difference seen; repeated until no C within reach is left loose. On a peaked curve this is
   one or two Cs, on a flat one the whole flat top;
3. each re-solved score counts as wrong every val prediction the solve cannot vouch for: an example whose
   top-two margin is within `UNCERTAINTY_FACTOR` (10) times the margin change of the remaining Newton step
   (M^-1 g, the solver's Kronecker-factored curvature at the solution) could still flip on the way to the
   minimiser, or on another machine; so does one within the penalty's rigorous bound (`penalty_bound`: the
   objective is (1 / (C n))-strongly convex in W, so ||W - W*|| <= ||grad_W|| C n), which the Newton estimate
   underrated by 10^4 at C = 1,778 on EfficientNet-Lite0 / textile-defects, where two solver paths (OpenBLAS on
   1 or 2 threads) chose C 1 and C 1,778 before this bound and C 1 on both after it. At moderate C none is
   uncertain and the score is the exact minimiser's;
   at very large C on separable data (where no solver gets near the minimiser) most are, so those Cs cannot
   win on a score that is an artefact of where their solve stopped. Every re-solve runs to `reselect_tol`: an
   earlier stop as soon as no val prediction looked uncertain (this estimate, checked during the solve) chose
   differently along two solver paths to the same minimisers (EfficientNet-Lite0 on textile-defects: C 5.62 vs
   1, a val example apart at C 3.16 and 5.62, both "certain"), which solving on to the tolerance did not;
4. the choice is the best such score; exact ties go to the smallest C (the strongest regularisation among
   settings the val data cannot tell apart: the simplest model, and the base rule of every probe);
5. the refit on train+val at that C is solved to `reselect_tol` too, from the selected tight solution, so the
   test score is the exact minimiser's, not where a loose refit stopped.

What makes the tight solves affordable (the rule is unchanged by it): each starts from the previous one's L-BFGS
curvature pairs (`_Solution.keep_curvature`; a neighbouring C's re-solve, and the refit from the selected C's,
mapped to the train+val standardisation), kept with `TIGHT_HISTORY` (200) pairs instead of `history_size`; the
sweep's loose solves pass their pairs on along the C path the same way; the refit's standardisation and feature
Gram are assembled from the sweep's and the val rows' (`_Problem.for_refit`); the line search of a tight solve
brackets on slopes where the objective is below its rounding (`unirep.probes.lbfgs._zoom_on_slopes`).

Feature columns whose spread is float32 rounding of a constant (relative spread below `FLOAT32_SPREAD`) are
left unscaled: standardising them would turn another machine's rounding noise into unit-variance features.

What was done is recorded in `selected_params_` (a record's `hyperparameters`): the re-solved Cs, the
tolerance, the tie rule and the number of uncertain val predictions at the chosen C; `sweep_` holds the
re-solved Cs' scores of step 3 and the loose ones elsewhere.
`reselect_margin=None` restores the loose choice (the behaviour before; noise-sensitive).
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unirep.config import LinearProbeConfig
from unirep.errors import ConfigError, DataError
from unirep.metrics import Metric
from unirep.probes import register_probe
from unirep.probes.base import FeatureSplit, Probe, SweepPoint, predictions_for_metric
from unirep.probes.lbfgs import minimize_lbfgs
from unirep.probes.linear_problem import _as_tensor, _Problem
from unirep.probes.linear_solution import _path_prediction, _release_curvature, _Solution
from unirep.probes.multinomial import blas_threads_only, linear, multinomial_objective
from unirep.probes.selection import certified_score, margin_errors, one_example_points, penalty_bound
from unirep.runtime import resolve_device

if TYPE_CHECKING:
    from omegaconf import DictConfig


def c_grid(min_exp: float, max_exp: float, n: int) -> np.ndarray:
    """The C grid every linear probe sweeps: n values evenly spaced in log10 from 10^min_exp to 10^max_exp, each
    the double nearest to its 10^e, computed in decimal arithmetic (40 digits): the same bits on every machine.

    Why not `np.logspace`: it goes through numpy's SIMD `power`, whose last bit depends on the CPU. With numpy
    2.4.6 an Intel Xeon (AVX-512) returned 0.056234132519034905 and 5.62341325190349 for 10^-1.25 and 10^0.75 of
    the default grid, an AMD EPYC (AVX2) the nearest doubles 0.05623413251903491 and 5.623413251903491, so the
    same selection was recorded with another C (and solved with another penalty) on each machine. The default
    grid's 45 values equal the AMD EPYC's `np.logspace`; a 7-value grid differed from it in 4."""
    with decimal.localcontext() as context:
        context.prec = 40
        low, high = Decimal(repr(float(min_exp))), Decimal(repr(float(max_exp)))
        exponents = [low] if n == 1 else [low + (high - low) * i / (n - 1) for i in range(n)]
        return np.array([float(Decimal(10) ** exponent) for exponent in exponents])


# Kornblith et al. 2019 / ssl-transfer: 10^linspace(-6, 5, 45), the `linear` section's defaults.
DEFAULT_CS = c_grid(LinearProbeConfig.c_min_exp, LinearProbeConfig.c_max_exp, LinearProbeConfig.n_c)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_SCORE_CHUNK = 65536  # rows per matmul when scoring, to bound memory on large test sets
TIE_RULE = "smallest C"  # among equal tight val scores: the strongest regularisation (Probe.select keeps the first)
# Relative objective resolution below which tight solves judge steps by their slope (Hager & Zhang's 1e-6).
_TIGHT_F_NOISE = 1e-6
# A val prediction is uncertain when its margin is within this factor of the estimated distance to the minimiser.
UNCERTAINTY_FACTOR = 10.0
# L-BFGS memory of the tight solves (and its cap in bytes): their pairs start the next tight solve and the refit
# (`_Solution.keep_curvature`). On fashion20k (module docstring of benchmarks/probe_vs_sklearn.py), where the
# large-C problems are badly conditioned, 30 pairs took its three tight solves 180-350 iterations each, 200 pairs
# and the carried pairs 61-200 (400: no fewer).
TIGHT_HISTORY = 200
TIGHT_HISTORY_BYTES = 512 * 2**20


@register_probe("linear")
class LinearProbe(Probe):
    """L2-regularised multinomial logistic regression on standardised features (sklearn's objective).

    Args:
        C: inverse regularisation strength used by `fit` (`select` chooses its own from `Cs`).
        Cs: the grid `select` sweeps on val, default 10^linspace(-6, 5, 45); swept in ascending order.
        max_iter: L-BFGS iterations per solve (sklearn's `max_iter`).
        tol: stop when the largest gradient entry of the C*n-scaled objective is <= tol (sklearn's `tol`).
        history_size: L-BFGS memory. scipy/sklearn use 10; 30 costs little next to one pass over the data and
            shortened the long large-C solves (Fashion-MNIST/resnet18 sweep: 941 -> 597 iterations).
        dtype: "float32" (default; test accuracy within 0.5 pt of sklearn's float64 fit, checked in
            tests/probes/test_linear_probe.py; losses are summed in float64) or "float64".
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        precondition: "auto" (default): start L-BFGS from the curvature preconditioner when the problem has at
            least as many examples as coordinates (always with `row_space`); True: always; False: never (plain
            L-BFGS as in sklearn, useful for comparisons). The minimiser is the same either way. Why "auto": its
            dim x dim eigendecomposition is paid once per problem; full sweeps on raw pixels (D = 3072) took 10.9 s
            with it and 3.5 s without at n = 768 in the standardised space, but 18.3 s with and 31.9 s without at
            n = 5000.
        row_space: with fewer examples than dimensions, solve in the span of the fitting rows (module
            docstring; the same minimiser). Default True; False: in the standardised space (for comparisons).
        patience: early stop of the sweep: stop once this many consecutive Cs each scored strictly below the
            best val score so far. None (default) sweeps every C. Val accuracy along the C path usually rises
            then falls, and the large-C end is where L-BFGS is slowest; a patience of 8 (two decades of the
            default grid) skips that end, at the risk of missing a second, later peak.
        reselect_margin: the near-best Cs whose val scores decide (module docstring): Cs whose loose val score is
            within this many val examples of the best are re-solved to `reselect_tol` before the choice, and the
            refit is solved to it too. Default 2; None: choose on the loose scores (noise-sensitive).
        reselect_tol: tolerance of those solves (max |gradient| of the scaled objective), default 1e-7.
    """

    swept_param = "C"
    multilabel_probe = "linear-multilabel"  # one-vs-rest logistic regression per class, chosen by mAP

    @classmethod
    def settings_from_config(cls, cfg: DictConfig, fallback: bool = False) -> dict[str, Any]:
        """The `linear` section: C grid, iteration budget and device; 1-shot uses the one C `fewshot.fallback_C`."""
        c = cfg.linear
        Cs = [cfg.fewshot.fallback_C] if fallback else c_grid(c.c_min_exp, c.c_max_exp, c.n_c)
        return {"Cs": Cs, "max_iter": c.max_iter, "device": c.device}

    def __init__(
        self,
        C: float = 1.0,
        Cs: np.ndarray | list[float] | None = None,
        max_iter: int = 1000,
        tol: float = 1e-4,
        history_size: int = 30,
        dtype: str = "float32",
        device: str = "cpu",
        patience: int | None = None,
        precondition: bool | str = "auto",
        reselect_margin: int | None = 2,
        reselect_tol: float = 1e-7,
        row_space: bool = True,
    ):
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.history_size = history_size
        self.dtype = dtype
        self.device = device
        self.patience = patience
        self.precondition = precondition
        self.reselect_margin = reselect_margin
        self.reselect_tol = reselect_tol
        self.row_space = row_space

    def _decision_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, classes) logits."""
        W, b = (torch.as_tensor(a, device=self._device()) for a in (self.coef_, self.intercept_))
        mean, scale = (torch.as_tensor(a, dtype=W.dtype, device=W.device) for a in (self.mean_, self.scale_))
        chunks = [linear((_as_tensor(X[i : i + _SCORE_CHUNK], W) - mean) / scale, W, b).cpu().numpy()
                  for i in range(0, len(X), _SCORE_CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.classes_)), dtype=self.coef_.dtype)

    def _init_params(self) -> dict:
        return {"C": float(self.C)}

    def select(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> LinearProbe:
        """`Probe.select` (best val score, ties to the smallest C, refit on train+val), choosing on tight
        re-solves of the near-best Cs (`reselect_margin`); `selected_params_` also records which Cs."""
        self._reselected: list[float] | None = None
        self.uncertain_val_: dict[float, int] = {}
        try:
            with blas_threads_only(self._device()):
                super().select(train, val, metric)
        finally:
            self.__dict__.pop("_refit_source", None)  # set by _sweep for the refit; never kept on the probe
        if self._reselected is not None:
            self.selected_params_ = {**self.selected_params_, "reselected_Cs": self._reselected,
                                     "reselect_tol": float(self.reselect_tol), "tie_break": TIE_RULE,
                                     "uncertain_val": self.uncertain_val_.get(self.selected_params_["C"], 0)}
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray, params: dict, warm_start: _Solution | None) -> LinearProbe:
        with blas_threads_only(self._device()):
            return self._fit_on_device(X, y, params, warm_start)

    def _fit_on_device(self, X: np.ndarray, y: np.ndarray, params: dict, warm_start: _Solution | None) -> LinearProbe:
        source = self.__dict__.pop("_refit_source", None)  # select's sweep problem and val features, if any
        if warm_start is not None and source is not None and len(X) == source[0].X.shape[0] + len(source[1]):
            problem = _Problem.for_refit(*source, X, y, self._torch_dtype(), self._device(), self.row_space)
        else:
            problem = _Problem.build(X, y, np.unique(y), self._torch_dtype(), self._device(), row_space=self.row_space)
        start = warm_start.restandardised(problem) if warm_start is not None else _Solution.zeros(problem)
        tight = warm_start is not None and warm_start.tight  # a tight selection is refitted tightly
        solution, n_iter = self._solve(problem, start, params["C"], tight=tight)
        self._store(problem, solution, params["C"], n_iter)
        return self

    def _sweep(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> list[SweepPoint]:
        """Solve every C (ascending, warm-started along the path) on train and score each on val."""
        self._check_settings()
        problem = _Problem.build(train.X, train.y, np.unique(train.y), self._torch_dtype(), self._device(),
                                 row_space=self.row_space)
        val_X = problem.standardise(val.X)
        solution = _Solution.zeros(problem)
        path: list[tuple[float, _Solution]] = []  # (log C, solution) of the solves that moved the weights
        one_step_without_prediction = False
        points: list[SweepPoint] = []
        self.sweep_n_iter_: dict[float, int] = {}
        for C in np.sort(np.asarray(DEFAULT_CS if self.Cs is None else self.Cs, dtype=np.float64)):
            # Where the previous C took a single plain step (the small-C end, where the weights grow in
            # proportion to C), one more step does as well as a prediction, which costs an evaluation.
            predicted = None if one_step_without_prediction else _path_prediction(problem, path, float(C), solution,
                                                                                   self.tol)
            # The solve starts from the previous C's curvature pairs too (only the latest are kept).
            start = (predicted or solution).borrowing_curvature(solution)
            solution.curvature = None
            solution, n_iter = self._solve(problem, start, float(C))
            if n_iter > 0 or predicted is not None:
                path.append((math.log(C), solution))
                one_step_without_prediction = n_iter == 1 and predicted is None
            if n_iter > 0 or not points:  # a warm start already converged for this C keeps the previous score
                scores = linear(val_X, solution.W, solution.b).cpu().numpy()
                score = float(metric(val.y, predictions_for_metric(metric, scores, problem.classes)))
            points.append(SweepPoint({"C": float(C)}, score, solution))
            self.sweep_n_iter_[float(C)] = n_iter
            if self._sweep_has_peaked(points):
                break
        if self.reselect_margin is not None:
            self._reselected = self._reselect(problem, val_X, val, metric, points)
        self._refit_source = (problem, val_X)
        return points

    def _reselect(
        self, problem: _Problem, val_X: torch.Tensor, val: FeatureSplit, metric: Metric, points: list[SweepPoint]
    ) -> list[float]:
        """Re-solve to `reselect_tol` and re-score with the certified score (`certified_score`), in place,
        every point whose loose score is within reach of the best (module docstring, step 2) until none is left
        loose. The uncertainty grows with C (the curvature's floor is 1 / (C n)), so once a re-solved C has more
        than `reselect_margin` uncertain predictions and scores below the best, larger Cs are not re-solved:
        they keep the step-3 score of their loose solution (far below: most of their predictions are
        uncertain). Returns the re-solved Cs, ascending."""
        step = one_example_points(metric, val.y)
        loose_scores = [point.score for point in points]
        tight: dict[int, float] = {}
        moves: list[float] = [0.0]  # |certified - loose| where every val prediction is certified: the loose error
        ceiling = len(points)
        donor: _Solution | None = None  # the last tight solve: its curvature pairs start the next one
        while True:
            best = max(tight.values()) if tight else max(loose_scores)
            reach = best - self.reselect_margin * step - max(moves) - 1e-9 * step
            todo = [i for i, score in enumerate(loose_scores[:ceiling]) if i not in tight and score >= reach]
            if not todo:
                break
            for i in todo:
                C = float(points[i].params["C"])
                start = points[i].warm_start if donor is None else points[i].warm_start.borrowing_curvature(donor)
                solution, n_iter = self._solve(problem, start, C, tight=True)
                self.sweep_n_iter_[C] += n_iter
                tight[i], uncertain = self._certify(problem, val_X, val, metric, solution, C)
                if uncertain == 0:
                    moves.append(abs(tight[i] - loose_scores[i]))
                points[i] = SweepPoint(points[i].params, tight[i], solution)
                donor = solution
                _release_curvature(points, tight, keep=(i, max(tight, key=lambda j: (tight[j], -j))))
                if uncertain > self.reselect_margin and tight[i] < max(tight.values()):
                    ceiling = i + 1
                    break
        for i in range(ceiling, len(points)):  # not re-solved, but within reach: their loose lower bound
            if loose_scores[i] >= max(tight.values()) - self.reselect_margin * step - max(moves) - 1e-9 * step:
                C = float(points[i].params["C"])
                score, _ = self._certify(problem, val_X, val, metric, points[i].warm_start, C)
                points[i] = SweepPoint(points[i].params, score, points[i].warm_start)
        chosen = max(range(len(points)), key=lambda j: (points[j].score, -j))  # Probe.select's choice
        _release_curvature(points, tight, keep=(chosen,))  # the refit's start keeps its pairs
        return sorted(float(points[i].params["C"]) for i in tight)

    def _certify(
        self, problem: _Problem, val_X: torch.Tensor, val: FeatureSplit, metric: Metric, solution: _Solution,
        C: float,
    ) -> tuple[float, int]:
        """`certified_score` of `solution` at C; records the number of uncertain val predictions."""
        l2 = 1.0 / (C * problem.X.shape[0])
        theta = torch.cat([solution.W.reshape(-1), solution.b])
        grad = solution.objective_at(l2)[1]
        logits, margins, errors = margin_errors(problem, val_X, theta, grad, C)
        bound = penalty_bound(val_X, grad, solution.W.numel(), l2)
        uncertain = (margins <= UNCERTAINTY_FACTOR * errors) | (margins <= bound)
        score, uncertain = certified_score(metric, val.y, logits, uncertain, problem.classes)
        self.uncertain_val_[C] = uncertain
        return score, uncertain

    def _sweep_has_peaked(self, points: list[SweepPoint]) -> bool:
        """Early stop: the last `patience` Cs all scored strictly below the best so far."""
        if self.patience is None or len(points) <= self.patience:
            return False
        best_before = max(point.score for point in points[: -self.patience])
        return all(point.score < best_before for point in points[-self.patience :])

    def _solve(
        self, problem: _Problem, start: _Solution, C: float, tight: bool = False,
    ) -> tuple[_Solution, int]:
        """Minimise mean CE + ||W||^2 / (2 C n) from `start` with L-BFGS and a strong-Wolfe line search, to the
        probe's `tol`, or with `tight` to `reselect_tol` past the objective's rounding."""
        n_classes, dim = start.W.shape
        l2 = 1.0 / (C * problem.X.shape[0])
        pairs = start.curvature_pairs(l2)
        theta, n_iter, (loss, grad) = minimize_lbfgs(
            multinomial_objective(problem, l2),
            torch.cat([start.W.reshape(-1), start.b]),
            max_iter=self.max_iter, tol=min(self.reselect_tol, self.tol) if tight else self.tol,
            history_size=self._tight_history(problem) if tight else self.history_size,
            preconditioner=problem.preconditioner().start_solve(l2) if self._preconditions(problem, tight) else None,
            initial=start.objective_at(l2), f_noise=_TIGHT_F_NOISE if tight else 0.0, pairs=pairs,
            gradient_within=problem.gradient_within,
        )
        if not torch.isfinite(theta).all():
            raise DataError(f"linear probe diverged at C={C:g} (non-finite weights): check the features' scale")
        W, b = theta[: n_classes * dim].view(n_classes, dim), theta[n_classes * dim :]
        solution = _Solution.at(problem, W, b, (loss, grad), l2)
        solution.tight = tight
        solution.keep_curvature(pairs, l2)
        return solution, n_iter

    def _tight_history(self, problem: _Problem) -> int:
        """L-BFGS memory of the tight solves: `TIGHT_HISTORY` pairs, or fewer if those would take more than
        `TIGHT_HISTORY_BYTES` (2 vectors of the weights' size per pair), never fewer than `history_size`."""
        pair_bytes = 2 * (len(problem.classes) * (problem.X.shape[1] + 1)) * problem.X.element_size()
        return max(self.history_size, min(TIGHT_HISTORY, TIGHT_HISTORY_BYTES // pair_bytes))

    def _store(self, problem: _Problem, solution: _Solution, C: float, n_iter: int) -> None:
        self.classes_ = problem.classes
        self.mean_ = problem.mean.cpu().numpy()
        self.scale_ = problem.scale.cpu().numpy()
        self.coef_ = problem.lift(solution.W).cpu().numpy()  # in the standardised space (row space: W Q')
        self.intercept_ = solution.b.cpu().numpy()
        self.C_ = C
        self.n_iter_ = n_iter

    def _check_settings(self) -> None:
        Cs = np.asarray(DEFAULT_CS if self.Cs is None else self.Cs, dtype=np.float64)
        if Cs.ndim != 1 or Cs.size == 0 or not np.all(np.isfinite(Cs) & (Cs > 0)):
            raise ConfigError(f"linear probe Cs must be a non-empty list of positive numbers, got {self.Cs!r}")
        if self.precondition not in (True, False, "auto"):
            raise ConfigError(f"linear probe precondition must be true, false or 'auto', got {self.precondition!r}")
        if self.row_space not in (True, False):
            raise ConfigError(f"linear probe row_space must be true or false, got {self.row_space!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"linear probe patience must be None (off) or >= 1, got {self.patience!r}")
        if self.reselect_margin is not None and not (self.reselect_margin >= 0 and self.reselect_tol > 0):
            raise ConfigError(f"linear probe reselect_margin must be None (off) or >= 0 val examples, and "
                              f"reselect_tol > 0; got {self.reselect_margin!r} and {self.reselect_tol!r}")

    def _preconditions(self, problem: _Problem, tight: bool = False) -> bool:
        if self.precondition == "auto" and tight:
            return True  # a tight solve takes hundreds of iterations: the one D x D eigh pays for itself
        if self.precondition == "auto":
            return problem.X.shape[0] >= problem.X.shape[1]
        return bool(self.precondition)

    def _torch_dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ConfigError(f"linear probe dtype {self.dtype!r} is not supported: use 'float32' or 'float64'")
        return _DTYPES[self.dtype]

    def _device(self) -> torch.device:
        return resolve_device(self.device, setting="probe device")


__all__ = ["DEFAULT_CS", "LinearProbe", "c_grid", "resolve_device"]
