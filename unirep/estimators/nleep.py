"""NLEEP (Li et al., CVPR 2021 "Ranking neural checkpoints"): LEEP with a Gaussian mixture in place of the
source classifier, so any backbone can be scored, with or without a source head.

Features -> PCA keeping `variance` (0.8) of the variance -> GaussianMixture with diagonal covariances and
`component_ratio` x C components -> LEEP on the mixture posteriors p(z | x).

Cost on 2 cores: fitting is the expensive part, so PCA and the mixture are fitted on a seeded subsample of at
most `max_fit_samples` rows (default 5000; all rows when fewer) and the posteriors are then computed for every
row. The features are first divided by their overall standard deviation: the mixture's absolute covariance floor
(`reg_covar`) then acts relative to the data, which makes the score invariant to the feature scale up to
floating-point effects on the fit. Results depend on `seed` (k-means initialisation and subsample).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from unirep.errors import ConfigError
from unirep.estimators import register_estimator
from unirep.estimators.base import Estimator, log_expected_empirical_prediction


@register_estimator("nleep")
class NLEEP(Estimator):
    """LEEP on the posteriors of a diagonal GMM fitted to PCA-reduced features.

    Args:
        component_ratio: mixture components per target class (Li et al. use 5).
        variance: fraction of the feature variance the PCA keeps.
        max_fit_samples: the PCA and the mixture are fitted on at most this many rows (seeded subsample).
        max_iter: EM iterations cap.
        seed: seeds the subsample and the k-means initialisation of the mixture.
    """

    name = "nleep"
    scale_invariant = True

    def __init__(
        self,
        component_ratio: int = 5,
        variance: float = 0.8,
        max_fit_samples: int = 5000,
        max_iter: int = 100,
        seed: int = 0,
    ):
        self.component_ratio = component_ratio
        self.variance = variance
        self.max_fit_samples = max_fit_samples
        self.max_iter = max_iter
        self.seed = seed

    def _check_params(self) -> None:
        if not 0.0 < self.variance < 1.0:
            raise ConfigError(f"nleep variance must be in (0, 1), got {self.variance}")
        if self.component_ratio < 1 or self.max_fit_samples < 2:
            raise ConfigError(
                f"nleep needs component_ratio >= 1 and max_fit_samples >= 2, got {self.component_ratio} "
                f"and {self.max_fit_samples}"
            )

    def posteriors(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        """(N, Z) mixture posteriors p(z | x) for every row of `X`."""
        self._check_params()
        rng = np.random.default_rng(self.seed)
        scaled = (X - X.mean(axis=0)) / max(float(X.std()), np.finfo(np.float64).tiny)
        fit_rows = scaled
        if len(scaled) > self.max_fit_samples:
            fit_rows = scaled[np.sort(rng.choice(len(scaled), self.max_fit_samples, replace=False))]
        pca = PCA(n_components=self.variance, svd_solver="full").fit(fit_rows)
        # A mixture cannot have more components than the rows it is fitted on (tiny tasks).
        n_components = min(self.component_ratio * n_classes, len(fit_rows))
        gmm = GaussianMixture(
            n_components=n_components,
            covariance_type="diag",
            max_iter=self.max_iter,
            random_state=self.seed,
        ).fit(pca.transform(fit_rows))
        return gmm.predict_proba(pca.transform(scaled))

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return log_expected_empirical_prediction(self.posteriors(X, int(y.max()) + 1), y)
