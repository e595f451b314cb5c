import numpy as np
import pytest

from unirep.errors import DataError
from unirep.fewshot import kshot_indices, mean_ci, resolve_low_data_protocol, vtab_indices


def test_kshot_draws_k_per_class_with_val_inside_budget():
    labels = np.repeat(np.arange(4), 30)
    train, val = kshot_indices(labels, shots=10, val_fraction=0.2, seed=3)
    assert np.bincount(labels[train]).tolist() == [8] * 4 and np.bincount(labels[val]).tolist() == [2] * 4
    assert not set(train) & set(val)
    again = kshot_indices(labels, shots=10, val_fraction=0.2, seed=3)
    other = kshot_indices(labels, shots=10, val_fraction=0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    assert not np.array_equal(train, other[0])


def test_one_shot_has_no_val_and_too_few_examples_is_an_error():
    labels = np.repeat(np.arange(3), 5)
    train, val = kshot_indices(labels, shots=1, val_fraction=0.2, seed=0)
    assert len(train) == 3 and len(val) == 0
    with pytest.raises(DataError, match="fewer than 6 shots"):
        kshot_indices(labels, shots=6, val_fraction=0.2, seed=0)


def test_vtab_subset_sizes_and_error():
    train, val = vtab_indices(5000, 800, 200, seed=0)
    assert len(train) == 800 and len(val) == 200 and not set(train) & set(val)
    with pytest.raises(DataError, match="fewer than the 800\\+200"):
        vtab_indices(900, 800, 200, seed=0)


def test_protocol_names_resolve_by_pattern():
    assert resolve_low_data_protocol("linear-5shot").keywords == {"base": "linear", "shots": 5}
    assert resolve_low_data_protocol("knn-1k").keywords == {"base": "knn", "shots": None}
    assert resolve_low_data_protocol("svm-5shot") is None and resolve_low_data_protocol("linear-0shot") is None


def test_mean_ci_matches_t_interval():
    mean, half = mean_ci([70.0, 72.0, 74.0])
    assert mean == 72.0 and half == pytest.approx(4.303 * 2.0 / np.sqrt(3), rel=1e-3)
    assert mean_ci([5.0]) == (5.0, 0.0)
