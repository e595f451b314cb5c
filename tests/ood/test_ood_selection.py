"""Hyperparameters are chosen on the validation OoD set only: a registered spy score records every array each candidate
scores inside `score_record` (the run's own code path). Candidates see ID val and the val OoD set only; the test sets
are scored once each, by the chosen candidate, after the choice; and a test OoD set that would favour another
candidate changes nothing, while a different val OoD set does change the choice."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from unirep.ood import SCORES, OodScore, create_benchmark, register_score
from unirep.ood.run import BenchmarkFeatures, OodConfig, score_record

CALLS: list[tuple[float, str]] = []


@pytest.fixture(scope="module")
def spy():
    @register_score("test-spy", paper="test only: score = sign * f_0, the sign chosen on val OoD")
    class Spy(OodScore):
        needs_head = False
        grid = {"sign": [1.0, -1.0]}

        def score(self, features, logits):
            CALLS.append((self.params["sign"], names[id(features)]))
            return self.params["sign"] * features[:, 0]

    names: dict[int, str] = {}
    yield names
    SCORES._entries.pop("test-spy")


@pytest.fixture(scope="module")
def bench():
    return create_benchmark("opencv-digits-ood")


def features_for(bench, val_ood_centre: float, test_ood_centre: float) -> BenchmarkFeatures:
    rng = np.random.default_rng(0)
    centre = {"id": 0.0, "val": val_ood_centre}
    features = {key: rng.normal(centre.get(key.split("/")[0], test_ood_centre), 1.0, (n, 2))
                for key, n in bench.counts.items()}
    return BenchmarkFeatures(features, dict.fromkeys(features), {k: s.labels for k, s in bench.sets.items()},
                             None, None, None, {}, {})


def record(bench, data, names):
    names.clear()
    names.update({id(x): key for key, x in data.features.items()})
    CALLS.clear()
    cfg = OmegaConf.merge(OmegaConf.structured(OodConfig), {"backbones": ["x"], "benchmarks": [bench.name],
                                                           "classifier": "none"})
    return score_record("test-spy", bench, data, "x", {}, cfg, {}), list(CALLS)


def test_candidates_see_only_the_validation_sets(spy, bench):
    # val OoD below ID: sign +1 puts ID above it (AUROC near 100); the test OoD sets, above ID, favour sign -1
    data = features_for(bench, val_ood_centre=-3.0, test_ood_centre=3.0)
    chosen, calls = record(bench, data, spy)
    val_key = f"val/{bench.card.val.name}"
    selection = [c for c in calls if c[1] in ("id/val", val_key)]
    assert selection == [(1.0, "id/val"), (1.0, val_key), (-1.0, "id/val"), (-1.0, val_key)]
    scored = [c for c in calls if c not in selection]
    assert scored == [(1.0, "id/test")] + [(1.0, key) for key in bench.test_set_keys()]  # once each, the chosen one
    assert calls.index(scored[0]) > calls.index(selection[-1])  # after every candidate's val AUROC
    assert chosen.hyperparameters == {"sign": 1.0}
    assert chosen.metrics["far"]["auroc"] < 10  # the test sets would have chosen the other sign
    assert chosen.val_selection["val_ood_set"] == val_key and chosen.val_selection["id_set"] == "id/val"


def test_the_test_sets_cannot_move_the_choice_but_the_val_set_does(spy, bench):
    base, _ = record(bench, features_for(bench, val_ood_centre=-3.0, test_ood_centre=3.0), spy)
    other_test, _ = record(bench, features_for(bench, val_ood_centre=-3.0, test_ood_centre=-6.0), spy)
    assert other_test.val_selection == base.val_selection and other_test.hyperparameters == base.hyperparameters
    assert other_test.metrics["far"]["auroc"] > 90 > 10 > base.metrics["far"]["auroc"]
    other_val, _ = record(bench, features_for(bench, val_ood_centre=3.0, test_ood_centre=3.0), spy)
    assert other_val.hyperparameters == {"sign": -1.0} and other_val.metrics["far"]["auroc"] > 90
