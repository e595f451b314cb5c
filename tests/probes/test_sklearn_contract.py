"""Every registered probe honours the scikit-learn estimator contract it claims, checked by scikit-learn's own
suite (`check_estimator`'s checks, one test each): NotFittedError before fit, n_features_in_ checked in predict,
NaN/inf, empty, complex, object, sparse and 1-D input refused with scikit-learn's errors, fit on lists and
pandas, string labels, pickling, idempotent fits. Checks that cannot apply to a probe are declared on the probe
class (`sklearn_expected_failed_checks`, with a reason each) and run as strict xfails: a declared failure that
starts passing fails here, so the declarations cannot go stale.
"""

from __future__ import annotations

from unittest import SkipTest

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from unirep.probes import PROBES, _import_probes, create_probe

_import_probes()

# Small solver budgets keep the suite fast (every check fits a few tiny problems); set through the probes' own
# constructor parameters, the code paths are those of the defaults. The multi-label probe's default tol=1e-6
# (with ftol=1e-14) spends most of its time polishing digits no check looks at; 1e-4 is scikit-learn's default.
CHECK_SETTINGS = {"linear": {"max_iter": 100}, "linear-multilabel": {"max_iter": 100, "tol": 1e-4}}

# unirep's own probes; tests that register a probe of their own (tests/test_probe_protocols.py) check theirs.
UNIREP_PROBES = [name for name in PROBES.list() if PROBES.get(name).__module__.startswith("unirep.")]
PROBES_UNDER_TEST = [create_probe(name, **CHECK_SETTINGS.get(name, {})) for name in UNIREP_PROBES]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# scikit-learn's own verdicts that a check does not apply, which it raises as SkipTest: the array-API input check
# runs only with SCIPY_ARRAY_API=1 (probes take numpy arrays), and the multi-label probe has no predict_proba or
# decision_function (its scores are `decision_scores`). Any other skip fails the test instead of hiding a check.
NOT_APPLICABLE = ("SCIPY_ARRAY_API is not set", "does not have a predict_proba method",
                  "does not have a decision_function method")


def test_every_registered_probe_is_checked():
    registered = {PROBES.get(name) for name in PROBES.list() if PROBES.get(name).__module__.startswith("unirep.")}
    assert {type(probe) for probe in PROBES_UNDER_TEST} == registered
    assert {"linear", "knn", "linear-multilabel"} <= set(UNIREP_PROBES)


@parametrize_with_checks(PROBES_UNDER_TEST, expected_failed_checks=lambda probe: probe.sklearn_expected_failed_checks,
                         xfail_strict=True)
def test_probe_passes_sklearn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except SkipTest as exc:
        assert any(reason in str(exc) for reason in NOT_APPLICABLE), f"unexpected skip: {exc}"
