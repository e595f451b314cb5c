"""Post-hoc out-of-distribution detection on cached features: OoD benchmark cards (`tasks/ood/`), scores (one
registry, higher = more in-distribution), metrics (AUROC, AUPR-In/Out, FPR@95 %TPR in both conventions) and the
`unirep ood` run (unirep.ood.run). It reads tasks, features and probes; nothing below it imports it.

Example:
    >>> from unirep.ood import create_benchmark, create_score, list_scores, ood_metrics
    >>> bench = create_benchmark("opencv-digits-ood")
    >>> list_scores()[:3]
    ['ash', 'energy', 'entropy']
"""

# Imported to register their scores: the fitted ones, and CLIP's MCM / GL-MCM; scores.py holds the logit ones.
from unirep.ood import clip_scores, feature_scores, gaussian_scores  # noqa: F401
from unirep.ood.benchmarks import OodBenchmark, create_benchmark, list_benchmarks, load_benchmark_card
from unirep.ood.metrics import CONVENTIONS, ood_metrics
from unirep.ood.scores import SCORES, FitData, LinearHead, OodScore, ScoreNotApplicable, register_score


def create_score(name: str, **params) -> OodScore:
    """The registered score `name` with these hyperparameters (unset: its defaults / the first of its grid).

    Example:
        >>> react = create_score("react", percentile=90)
    """
    return SCORES.get(name)(**params)


def list_scores(pattern: str = "*") -> list[str]:
    return SCORES.list(pattern)


__all__ = ["CONVENTIONS", "FitData", "LinearHead", "OodBenchmark", "OodScore", "SCORES", "ScoreNotApplicable",
           "create_benchmark", "create_score", "list_benchmarks", "list_scores", "load_benchmark_card", "ood_metrics",
           "register_score"]
