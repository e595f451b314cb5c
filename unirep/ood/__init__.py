"""Post-hoc out-of-distribution detection on cached features: OoD benchmark cards (`tasks/ood/`), scores (one
registry, higher = more in-distribution), metrics (AUROC, AUPR-In/Out, FPR@95 %TPR in both conventions) and the
`unirep ood` run (unirep.ood.run). It reads tasks, features and probes; nothing below it imports it.

Example:
    >>> from unirep.ood import create_benchmark, create_score, list_scores, ood_metrics
    >>> bench = create_benchmark("opencv-digits-ood")
    >>> list_scores()[:3]
    ['ash', 'energy', 'entropy']
"""

from unirep.ood.benchmarks import OodBenchmark, create_benchmark, list_benchmarks, load_benchmark_card
from unirep.ood.metrics import CONVENTIONS, ood_metrics
from unirep.ood.scores import SCORES, FitData, LinearHead, OodScore, create_score, list_scores, register_score

__all__ = ["CONVENTIONS", "FitData", "LinearHead", "OodBenchmark", "OodScore", "SCORES", "create_benchmark",
           "create_score", "list_benchmarks", "list_scores", "load_benchmark_card", "ood_metrics", "register_score"]
