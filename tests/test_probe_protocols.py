"""One generic probe protocol: a probe registered once (`register_probe`, nothing else) runs as `<probe>`,
`<probe>-<k>shot` and `<probe>-1k` through `evaluate`, on a real task (sklearn-digits) and a real backbone (raw
pixels at 8 px). The probe here is a real one, nearest class mean (optionally on L2-normalised rows), and every
score is recomputed independently with scikit-learn's `NearestCentroid` from the cached features and the
subsets the records name. The built-in probes keep their settings: the C grid and kNN candidates of the run
config reach them exactly as before.
"""

from __future__ import annotations

import json

import mpmath
import numpy as np
import pytest
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import normalize
from sklearn.utils.estimator_checks import check_estimator

from unirep.config import EvalConfig, backbone_specs, load_config
from unirep.evaluate import build_backbone, evaluate, extraction_settings
from unirep.features import FeatureCache
from unirep.fewshot import low_data_protocol_patterns, resolve_low_data_protocol
from unirep.fileio import sha256_json
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, register_probe
from unirep.probes.base import Probe, SweepPoint
from unirep.probes.linear import DEFAULT_CS, c_grid
from unirep.protocols import PROTOCOLS, _import_protocols, build_probe, create_protocol
from unirep.tasks import create_task

NAME = "nearest-mean-test"
TASK = "sklearn-digits"
BACKBONE = {"name": "raw-pixels", "input_size": 8}
# NearestCentroid notes that some pixels are constant within a class (digits' borders); its predictions are fine.
pytestmark = pytest.mark.filterwarnings("ignore:self.within_class_std_dev_ has at least 1 zero")


@register_probe(NAME)
class NearestClassMeanProbe(Probe):
    """Predicts the class whose training mean is nearest (squared euclidean distance); `normalise` first scales
    every row to unit L2 norm (a cosine nearest-mean classifier). `select` chooses between the `options` on val.
    """

    swept_param = "normalise"

    def __init__(self, normalise: bool = False, options: tuple[bool, ...] = (False, True)):
        self.normalise = normalise
        self.options = options

    def _init_params(self) -> dict:
        return {"normalise": bool(self.normalise)}

    def _fit(self, X: np.ndarray, y: np.ndarray, params: dict, warm_start: object = None) -> NearestClassMeanProbe:
        self.normalise_ = params["normalise"]
        X = self._rows(X)
        self.classes_, labels = np.unique(y, return_inverse=True)
        self.means_ = np.stack([X[labels == c].mean(axis=0) for c in range(len(self.classes_))])
        return self

    def _decision_scores(self, X: np.ndarray) -> np.ndarray:
        X = self._rows(X)
        return -((X[:, None, :] - self.means_[None, :, :]) ** 2).sum(axis=2)

    def _sweep(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> list[SweepPoint]:
        points = []
        for option in self.options:
            self._fit(train.X, train.y, {"normalise": bool(option)})
            predictions = self.classes_[np.argmax(self._decision_scores(val.X), axis=1)]
            points.append(SweepPoint({"normalise": bool(option)}, float(metric(val.y, predictions))))
        return points

    def _rows(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return normalize(X) if self.normalise_ else X


def nearest_centroid_score(X_fit, y_fit, X_test, y_test, normalise: bool) -> float:
    """The independent computation: scikit-learn's NearestCentroid, accuracy in percent."""
    prepare = normalize if normalise else (lambda X: X)
    model = NearestCentroid().fit(prepare(np.asarray(X_fit, np.float64)), y_fit)
    return 100.0 * float(np.mean(model.predict(prepare(np.asarray(X_test, np.float64))) == y_test))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-protocols")
    protocols = [NAME, f"{NAME}-5shot", f"{NAME}-1k"]
    cfg = load_config(EvalConfig, dotlist=[f"out={root / 'out'}", f"cache_dir={root / 'cache'}", f"tasks=[{TASK}]",
                                           f"protocols=[{','.join(protocols)}]", "fewshot.seeds=[0,1]"],
                      backbones=[BACKBONE])
    records = {(r.protocol, r.seed): r for r in evaluate(cfg)}
    task = create_task(TASK)
    backbone = build_backbone(backbone_specs(cfg)[0], cfg)
    cache = FeatureCache(root / "cache")
    splits = {s: cache.get_or_extract(backbone, task.manifest, s, task.split(s), extraction_settings(cfg), False)
              for s in ("train", "val", "test")}
    return records, splits, task, root / "out"


def test_registered_probe_is_a_protocol_in_all_three_forms():
    _import_protocols()
    assert NAME in PROTOCOLS.list()
    assert resolve_low_data_protocol(f"{NAME}-10shot").keywords == {"base": NAME, "shots": 10}
    assert resolve_low_data_protocol(f"{NAME}-1k").keywords == {"base": NAME, "shots": None}
    assert {f"{NAME}-<k>shot", f"{NAME}-1k"} <= set(low_data_protocol_patterns())
    from unirep.commands.listing import _list_protocols

    assert {NAME, f"{NAME}-<k>shot", f"{NAME}-1k"} <= set(_list_protocols())  # `unirep list protocols` shows all
    assert resolve_low_data_protocol("linear-multilabel-5shot") is None  # reached through `linear` only


def test_full_protocol_selects_on_val_and_scores_test_like_nearest_centroid(run):
    records, splits, _, _ = run
    record = records[(NAME, 0)]
    (train, val, test) = (splits[s] for s in ("train", "val", "test"))
    sweep = {option: nearest_centroid_score(train.features, train.labels, val.features, val.labels, option)
             for option in (False, True)}
    one_example = 100.0 / len(val.labels) + 1e-9  # distance sums in another order may flip one near-tie at most
    assert record.extra["val_sweep"] == pytest.approx({str(k): v for k, v in sweep.items()}, abs=one_example)
    chosen = record.hyperparameters["normalise"]
    assert record.val_score == max(record.extra["val_sweep"].values())
    expected = nearest_centroid_score(np.concatenate([train.features, val.features]),
                                      np.concatenate([train.labels, val.labels]), test.features, test.labels, chosen)
    assert record.score == pytest.approx(expected, abs=100.0 / len(test.labels) + 1e-9)
    assert record.test_labels == test.labels.tolist() and record.n_test == 600


@pytest.mark.parametrize(("protocol", "n_train", "n_val"), [(f"{NAME}-5shot", 40, 10), (f"{NAME}-1k", 800, 200)])
def test_low_data_protocols_fit_the_subsets_they_record(run, protocol, n_train, n_val):
    records, splits, task, out = run
    ids = {s: task.manifest.splits[s] for s in ("train", "val")}
    pool = {"train": ids["train"]} if protocol.endswith("shot") else {"train": ids["train"] + ids["val"]}
    pool_X = np.concatenate([splits[s].features for s in ("train", "val")][: 1 if protocol.endswith("shot") else 2])
    pool_y = np.concatenate([splits[s].labels for s in ("train", "val")][: 1 if protocol.endswith("shot") else 2])
    row = {example: i for i, example in enumerate(pool["train"])}
    for seed in (0, 1):
        record = records[(protocol, seed)]
        subset = json.loads((out / "subsets" / TASK / f"{protocol}-seed{seed}.json").read_text())
        assert sha256_json({"train": subset["train"], "val": subset["val"]}) == record.extra["subset_digest"]
        assert (len(subset["train"]), len(subset["val"])) == (n_train, n_val)
        fit_rows = [row[example] for example in subset["train"] + subset["val"]]
        expected = nearest_centroid_score(pool_X[fit_rows], pool_y[fit_rows], splits["test"].features,
                                          splits["test"].labels, record.hyperparameters["normalise"])
        assert record.score == pytest.approx(expected, abs=100.0 / 600 + 1e-9)
        assert record.hyperparameters["subset_seed"] == seed
    assert records[(protocol, 0)].extra["subset_digest"] != records[(protocol, 1)].extra["subset_digest"]


def test_the_test_probe_passes_the_sklearn_contract_too():
    """The base class gives a new probe scikit-learn's validation for free."""
    failed = [r for r in check_estimator(NearestClassMeanProbe(), on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:200]) for r in failed]


def _nearest_powers_of_ten(min_exp: float, max_exp: float, n: int) -> np.ndarray:
    """10^e for n exponents evenly spaced from min_exp to max_exp, each the double nearest to it: mpmath at 60
    digits (arbitrary precision, no CPU's pow involved), independent of c_grid's decimal arithmetic."""
    with mpmath.workdps(60):
        low, high = mpmath.mpf(min_exp), mpmath.mpf(max_exp)
        return np.array([float(mpmath.power(10, low + (high - low) * i / max(n - 1, 1))) for i in range(n)])


@pytest.mark.parametrize("min_exp, max_exp, n", [(-6.0, 5.0, 45), (-6.0, 5.0, 7), (-4.0, 2.0, 5), (-2.5, 1.0, 8),
                                                 (0.0, 0.0, 1)])
def test_the_c_grid_is_the_nearest_doubles_to_its_powers_of_ten(min_exp, max_exp, n):
    """The same bits on every machine: np.logspace's SIMD power gave 0.056234132519034905 for 10^-1.25 on an
    AVX-512 Xeon, where the nearest double (another machine's answer) is 0.05623413251903491."""
    grid = c_grid(min_exp, max_exp, n)
    np.testing.assert_array_equal(grid, _nearest_powers_of_ten(min_exp, max_exp, n))
    np.testing.assert_allclose(grid, np.logspace(min_exp, max_exp, n), rtol=1e-14)  # the grid it replaces
    if n == 45:
        assert (grid[19], grid[27]) == (0.05623413251903491, 5.623413251903491)
        np.testing.assert_array_equal(DEFAULT_CS, grid)


def test_builtin_probes_get_the_run_config_settings():
    cfg = load_config(EvalConfig, dotlist=["tasks=[x]", "linear.n_c=7", "linear.max_iter=50", "knn.ks=[1,4]",
                                           "fewshot.fallback_C=0.5", "fewshot.fallback_k=3"], backbones=["x"])
    grid = _nearest_powers_of_ten(-6.0, 5.0, 7)
    np.testing.assert_array_equal(c_grid(-6.0, 5.0, 7), grid)
    linear = build_probe("linear", cfg)
    np.testing.assert_array_equal(linear.Cs, grid)
    assert (linear.max_iter, linear.device) == (50, "cpu")
    multilabel = build_probe("linear", cfg, multilabel=True)  # the `linear` protocol on an mAP task
    assert type(multilabel).__name__ == "MultiLabelLinearProbe" and multilabel.max_iter == 50
    np.testing.assert_array_equal(multilabel.Cs, grid)
    assert build_probe("linear", cfg, fallback=True).Cs == [0.5]
    knn = build_probe("knn", cfg)
    assert (knn.ks, knn.temperature) == ([1, 4], 0.07)
    assert build_probe("knn", cfg, fallback=True).ks == [3]
    assert create_protocol("knn-1shot", cfg).seeds() == [0, 1, 2]
