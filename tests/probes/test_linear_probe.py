"""LinearProbe against an independent scikit-learn LogisticRegression on the same standardised features:
same objective (sklearn 1.9's scaling), same solution, same accuracy; the C sweep is scored on val only,
the chosen C is the sweep's argmax with ties to the smaller C, and the refit uses train+val."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_data import gaussian_mixture
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from unirep.errors import ConfigError, DataError
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, create_probe, linear_problem, multinomial
from unirep.probes.linear import DEFAULT_CS, LinearProbe
from unirep.probes.linear_problem import _KroneckerPreconditioner, _Problem
from unirep.probes.linear_solution import _path_prediction, _Solution

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sklearn_objective(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, C: float) -> float:
    """sklearn's LogisticRegression objective, C * sum CE + 0.5 ||W||^2, computed independently in float64."""
    logits = X @ W.astype(np.float64).T + b
    logits -= logits.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]
    return C * cross_entropy.sum() + 0.5 * float((W.astype(np.float64) ** 2).sum())


def sklearn_fit(X: np.ndarray, y: np.ndarray, C: float, tol: float = 1e-4) -> tuple[StandardScaler, LogisticRegression]:
    X = X.astype(np.float64)  # a float64 reference: sklearn would otherwise solve in float32 too
    scaler = StandardScaler().fit(X)
    return scaler, LogisticRegression(C=C, tol=tol, max_iter=20_000).fit(scaler.transform(X), y)


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_solution_matches_sklearn(digits, C):
    scaler, reference = sklearn_fit(digits.X_train, digits.y_train, C, tol=1e-10)
    probe = LinearProbe(C=C, dtype="float64", tol=1e-8, max_iter=5000).fit(digits.X_train, digits.y_train)
    np.testing.assert_allclose(probe.mean_, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(probe.scale_, scaler.scale_, rtol=1e-6)
    X = scaler.transform(digits.X_train)
    ours = sklearn_objective(probe.coef_, probe.intercept_, X, digits.y_train, C)
    theirs = sklearn_objective(reference.coef_, reference.intercept_, X, digits.y_train, C)
    assert ours == pytest.approx(theirs, rel=1e-6)
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=2e-3 * scale)
    np.testing.assert_allclose(probe.intercept_, reference.intercept_, atol=2e-3 * max(scale, 1.0))


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_default_float32_accuracy_matches_sklearn(digits, C):
    # tol 1e-6 on both sides: at sklearn's loose default (1e-4) a nearly separable problem at large C stops
    # wherever each solver's path happens to be, so two correct solvers need not agree there.
    scaler, reference = sklearn_fit(digits.X_train, digits.y_train, C, tol=1e-6)
    probe = create_probe("linear", C=C, tol=1e-6).fit(digits.X_train, digits.y_train)
    ours = Metric.TOP1(digits.y_test, probe.predict(digits.X_test))
    theirs = Metric.TOP1(digits.y_test, reference.predict(scaler.transform(digits.X_test)))
    assert abs(ours - theirs) <= 0.5
    X = scaler.transform(digits.X_train)
    ours_objective = sklearn_objective(probe.coef_, probe.intercept_, X, digits.y_train, C)
    theirs_objective = sklearn_objective(reference.coef_, reference.intercept_, X, digits.y_train, C)
    assert ours_objective == pytest.approx(theirs_objective, rel=1e-2)


def test_preconditioning_changes_the_path_not_the_solution(digits):
    plain = LinearProbe(C=1.0, dtype="float64", tol=1e-8, precondition=False).fit(digits.X_train, digits.y_train)
    fast = LinearProbe(C=1.0, dtype="float64", tol=1e-8).fit(digits.X_train, digits.y_train)
    np.testing.assert_allclose(fast.coef_, plain.coef_, atol=1e-3 * np.abs(plain.coef_).max())


def test_selected_C_is_the_val_argmax_and_refit_uses_train_and_val(digits):
    Cs = 10.0 ** np.arange(-4, 2)
    train, val = FeatureSplit(digits.X_train, digits.y_train), FeatureSplit(digits.X_val, digits.y_val)
    probe = LinearProbe(Cs=Cs, dtype="float64", tol=1e-8, max_iter=5000).select(train, val, Metric.TOP1)
    assert list(probe.sweep_) == pytest.approx(list(Cs))
    for C in Cs[::2]:  # the sweep's val scores are sklearn's, C by C
        scaler, reference = sklearn_fit(digits.X_train, digits.y_train, C, tol=1e-10)
        expected = Metric.TOP1(digits.y_val, reference.predict(scaler.transform(digits.X_val)))
        assert abs(probe.sweep_[C] - expected) <= 0.25  # at most one val example of 400
    best = max(probe.sweep_.values())
    assert probe.selected_params_["C"] == min(C for C, score in probe.sweep_.items() if score == best)
    assert probe.selected_params_["C"] in probe.selected_params_["reselected_Cs"]
    assert probe.val_score_ == best
    # The refit: train+val, standardised with train+val statistics, at the chosen C.
    X_all = np.concatenate([digits.X_train, digits.X_val])
    y_all = np.concatenate([digits.y_train, digits.y_val])
    scaler, reference = sklearn_fit(X_all, y_all, probe.selected_params_["C"], tol=1e-10)
    np.testing.assert_allclose(probe.mean_, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=2e-3 * np.abs(reference.coef_).max())
    assert probe.C_ == probe.selected_params_["C"]


def test_ties_go_to_the_smaller_C():
    # Well separated clusters: every C in the grid classifies val perfectly, so all candidates tie.
    X_train, y_train = gaussian_mixture(30, n_classes=3, seed=0, spread=0.2)
    X_val, y_val = gaussian_mixture(20, n_classes=3, seed=1, spread=0.2)
    train, val = FeatureSplit(X_train, y_train), FeatureSplit(X_val, y_val)
    probe = LinearProbe(Cs=[10.0, 0.01, 1.0, 0.1]).select(train, val, Metric.TOP1)
    assert set(probe.sweep_.values()) == {100.0}
    # Every C ties, so every C is re-solved tightly before the tie-break (ascending: the strongest regularisation).
    assert probe.selected_params_ == {"C": 0.01, "reselected_Cs": [0.01, 0.1, 1.0, 10.0], "reselect_tol": 1e-7,
                                      "tie_break": "smallest C", "uncertain_val": 0}
    assert list(probe.sweep_) == [0.01, 0.1, 1.0, 10.0]  # swept in ascending order (warm starts go up the path)


def test_early_stop_of_the_sweep(digits):
    train, val = FeatureSplit(digits.X_train, digits.y_train), FeatureSplit(digits.X_val, digits.y_val)
    probe = LinearProbe(patience=3).select(train, val, Metric.TOP1)
    scores = list(probe.sweep_.values())
    assert len(scores) < 45
    assert all(score < max(scores[:-3]) for score in scores[-3:])
    assert probe.val_score_ == max(scores)
    full = LinearProbe(Cs=list(probe.sweep_)).select(train, val, Metric.TOP1)
    assert full.selected_params_ == probe.selected_params_


def test_mean_per_class_metric_drives_selection(digits):
    train, val = FeatureSplit(digits.X_train, digits.y_train), FeatureSplit(digits.X_val, digits.y_val)
    probe = LinearProbe(Cs=[1e-3, 1e-1, 10.0]).select(train, val, Metric.MEAN_PER_CLASS)
    assert probe.val_score_ == max(probe.sweep_.values())
    fitted_on_train = LinearProbe(C=probe.selected_params_["C"]).fit(train.X, train.y)
    assert probe.val_score_ == pytest.approx(Metric.MEAN_PER_CLASS(val.y, fitted_on_train.predict(val.X)), abs=0.3)


def test_estimator_contract():
    probe = create_probe("linear", C=0.5, max_iter=200)
    assert isinstance(probe, LinearProbe)
    assert probe.get_params()["C"] == 0.5 and probe.get_params()["max_iter"] == 200
    assert clone(probe).get_params() == probe.get_params()
    X, y = np.random.default_rng(0).normal(size=(40, 5)), np.repeat([3, 7], 20)
    assert probe.fit(X, y) is probe
    assert set(probe.predict(X)) <= {3, 7}  # original labels come back, not indices
    assert probe.decision_scores(X).shape == (40, 2)


def test_nan_features_raise_one_line_data_error(digits):
    X = digits.X_train.copy()
    X[5, 3] = np.nan
    for build in (lambda: FeatureSplit(X, digits.y_train), lambda: LinearProbe().fit(X, digits.y_train)):
        with pytest.raises(DataError) as error:
            build()
        assert "NaN" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "settings",
    [{"device": "tpu-7"}, {"dtype": "float16"}, {"Cs": []}, {"Cs": [0.1, -1.0]}, {"patience": 0},
     {"precondition": "sometimes"}, {"row_space": "yes"}],
)
def test_bad_settings_raise_config_error(digits, settings):
    train, val = FeatureSplit(digits.X_train, digits.y_train), FeatureSplit(digits.X_val, digits.y_val)
    with pytest.raises(ConfigError):
        LinearProbe(**settings).select(train, val, Metric.TOP1)


def test_cuda_device_needs_cuda(digits):
    if torch.cuda.is_available():
        probe = LinearProbe(C=1.0, device="cuda").fit(digits.X_train, digits.y_train)
        reference = LinearProbe(C=1.0).fit(digits.X_train, digits.y_train)
        assert Metric.TOP1(digits.y_test, probe.predict(digits.X_test)) == pytest.approx(
            Metric.TOP1(digits.y_test, reference.predict(digits.X_test)), abs=0.5
        )
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            LinearProbe(device="cuda").fit(digits.X_train, digits.y_train)


def test_single_class_is_a_data_error():
    with pytest.raises(DataError, match="at least 2 classes"):
        LinearProbe().fit(np.ones((10, 3)), np.zeros(10, dtype=int))


def test_preconditioner_falls_back_to_float64_when_float32_eigh_fails(digits, monkeypatch):
    # float32 LAPACK returned NaN (no exception) on a real source network's features with many constant columns;
    # that matrix is too large to ship, so the failure is injected and the real float64 eigh must take over.
    real_eigh = torch.linalg.eigh

    def float32_fails(matrix):
        values, vectors = real_eigh(matrix)
        return (values * np.nan, vectors) if matrix.dtype == torch.float32 else (values, vectors)

    monkeypatch.setattr(torch.linalg, "eigh", float32_fails)
    train, val = FeatureSplit(digits.X_train, digits.y_train), FeatureSplit(digits.X_val, digits.y_val)
    probe = LinearProbe(Cs=[1e-2, 1.0], precondition=True).select(train, val, Metric.TOP1)
    monkeypatch.setattr(torch.linalg, "eigh", real_eigh)
    reference = LinearProbe(Cs=[1e-2, 1.0], precondition=False).select(train, val, Metric.TOP1)
    # Same minimiser up to the solvers' stopping tolerance: same val scores, weights within a few hundredths.
    assert probe.selected_params_ == reference.selected_params_ and probe.sweep_ == reference.sweep_
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=5e-2)


def test_kronecker_preconditioner_is_the_inverse_of_its_curvature(digits, monkeypatch):
    # Independent dense construction: M = S (x) G + l2 I on the row-major weights, S from the softmax at theta.
    # Eigendecompositions in float64 to compare to ~1e-6 (float32 ones, the default, are enough to precondition).
    monkeypatch.setattr(linear_problem, "EIGH_DTYPE", torch.float64)
    problem = _Problem.build(digits.X_train, digits.y_train, np.unique(digits.y_train), torch.float64,
                             torch.device("cpu"))
    n_classes, dim = 10, problem.X.shape[1]
    theta = torch.from_numpy(np.random.default_rng(0).normal(scale=0.1, size=n_classes * dim + n_classes))
    l2 = 1e-3
    apply = _KroneckerPreconditioner(problem).start_solve(l2)(theta)
    X = problem.X.numpy()
    logits = X @ theta[: n_classes * dim].numpy().reshape(n_classes, dim).T + theta[n_classes * dim :].numpy()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    S = np.diag(p.mean(axis=0)) - p.T @ p / len(X)
    M = np.kron(S, X.T @ X / len(X)) + l2 * np.eye(n_classes * dim)
    v = torch.from_numpy(np.random.default_rng(1).normal(size=n_classes * dim + n_classes))
    out = apply(v).numpy()
    expected = np.linalg.solve(M, v[: n_classes * dim].numpy())
    np.testing.assert_allclose(out[: n_classes * dim], expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    np.testing.assert_allclose(out[n_classes * dim :], v[n_classes * dim :].numpy() / np.diag(S).mean(), rtol=1e-9)
    # The L-BFGS scale u' M^-1 u, computed from u's rotation alone in the same pass as M^-1 v.
    u = torch.from_numpy(np.random.default_rng(2).normal(size=n_classes * dim + n_classes))
    paired, curvature = apply.with_curvature(v, u)
    # The same M^-1 v, to float64 rounding: its rows ride in a taller product (MKL's kernels for the two shapes
    # sum in another order: bit-identical on the AMD EPYC this was written on, 7e-13 apart on an Intel Xeon).
    torch.testing.assert_close(paired, apply(v), rtol=1e-10, atol=1e-12 * float(apply(v).abs().max()))
    u_weights, u_biases = u[: n_classes * dim].numpy(), u[n_classes * dim :].numpy()
    expected_curvature = u_weights @ np.linalg.solve(M, u_weights) + (u_biases @ u_biases) / np.diag(S).mean()
    assert float(curvature) == pytest.approx(expected_curvature, rel=1e-6)


def test_path_prediction_lands_closer_to_the_next_minimiser(digits):
    problem = _Problem.build(digits.X_train, digits.y_train, np.unique(digits.y_train), torch.float64,
                             torch.device("cpu"))
    solver = LinearProbe(dtype="float64", tol=1e-9, max_iter=5000)
    Cs = DEFAULT_CS[20:23]  # three neighbours of the default grid (~0.03 to 0.1)
    path, solution = [], _Solution.zeros(problem)
    for C in Cs[:2]:
        solution, _ = solver._solve(problem, solution, float(C))
        path.append((np.log(C), solution))
    exact, _ = solver._solve(problem, solution, float(Cs[2]))
    predicted = _path_prediction(problem, path, float(Cs[2]), solution, tol=1e-9)
    assert predicted is not None
    l2 = 1.0 / (Cs[2] * len(digits.y_train))
    assert predicted.objective_at(l2)[0] < solution.objective_at(l2)[0]
    distance = {name: float((start.W - exact.W).norm()) for name, start in (("previous", solution),
                                                                           ("predicted", predicted))}
    assert distance["predicted"] < 0.5 * distance["previous"]
    # The previous solution already meets a loose tolerance at the next C: no evaluation is spent on a prediction.
    assert _path_prediction(problem, path, float(Cs[2]), solution, tol=1e3) is None


def test_refit_problem_from_the_sweep_equals_a_direct_build(digits):
    # The refit's problem is assembled from the sweep's (train moments combined with the val rows', the feature
    # Gram moved to the train+val standardisation): it must be the problem a direct build on train+val gives,
    # and its Gram X'X / n the one computed independently in float64. Offset features exercise the mean shift;
    # digits' always-blank pixels the constant-column rule.
    X_train, X_val = digits.X_train + np.float32(3.0), digits.X_val + np.float32(3.0)
    X, y = np.concatenate([X_train, X_val]), np.concatenate([digits.y_train, digits.y_val])
    classes, cpu = np.unique(y), torch.device("cpu")
    train = _Problem.build(X_train, digits.y_train, classes, torch.float32, cpu)
    train.preconditioner()
    refit = _Problem.for_refit(train, train.standardise(X_val), X, y, torch.float32, cpu)
    direct = _Problem.build(X, y, classes, torch.float32, cpu)
    for name in ("mean", "scale", "X"):
        torch.testing.assert_close(getattr(refit, name), getattr(direct, name), rtol=1e-6, atol=1e-5)
    assert torch.equal(refit.y, direct.y)
    standardised = direct.X.double().numpy()
    np.testing.assert_allclose(refit.preconditioner().feature_gram.numpy(),
                               standardised.T @ standardised / len(X), atol=1e-5)


@pytest.mark.parametrize("blas", ["numpy", "torch"])
@pytest.mark.parametrize("n_classes", [10, multinomial.WIDE_LOGITS + 8])  # both products of the logits
def test_objective_and_gradient_match_a_float64_autograd_computation(digits, blas, n_classes, monkeypatch):
    # The hand-written gradient over transposed logits, through either BLAS, against torch's autograd of the
    # plain formula in float64: mean CE of X W' + b plus l2/2 ||W||^2.
    monkeypatch.setattr(multinomial, "probe_blas", lambda: blas)
    X, y = (digits.X_train, digits.y_train) if n_classes == 10 else gaussian_mixture(30, n_classes, dim=24)
    problem = _Problem.build(X, y, np.unique(y), torch.float32, torch.device("cpu"))
    dim = problem.X.shape[1]
    theta = torch.from_numpy(np.random.default_rng(0).normal(scale=0.1, size=n_classes * dim + n_classes)).float()
    l2 = 1e-3
    loss, grad = multinomial.multinomial_objective(problem, l2)(theta)
    reference = theta.double().requires_grad_()
    W, b = reference[: n_classes * dim].view(n_classes, dim), reference[n_classes * dim :]
    expected = (torch.nn.functional.cross_entropy(problem.X.double() @ W.T + b, problem.y)
                + 0.5 * l2 * W.square().sum())
    expected.backward()
    assert loss == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(grad.double(), reference.grad, rtol=1e-4, atol=1e-6 * float(reference.grad.abs().max()))


def test_probe_blas_follows_the_override_and_refuses_an_unknown_one(monkeypatch):
    for chosen in ("numpy", "torch", " Torch "):
        monkeypatch.setenv("UNIREP_PROBE_BLAS", chosen)
        multinomial.probe_blas.cache_clear()
        assert multinomial.probe_blas() == chosen.strip().lower()
    monkeypatch.setenv("UNIREP_PROBE_BLAS", "openblas")
    multinomial.probe_blas.cache_clear()
    with pytest.raises(ConfigError, match="UNIREP_PROBE_BLAS='openblas'.*use 'numpy' or 'torch'"):
        multinomial.probe_blas()
    monkeypatch.delenv("UNIREP_PROBE_BLAS")
    multinomial.probe_blas.cache_clear()  # the machine's default again for the tests that follow
