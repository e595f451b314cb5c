"""One device resolver, one library-version collector, one CPU-info reader and one NaN/Inf check, used by every
part of unirep."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import torch

import unirep
from unirep import runtime
from unirep.errors import ConfigError, DataError
from unirep.numerics import check_finite
from unirep.runtime import VERSIONED_PACKAGES, library_versions, resolve_device


def test_auto_device_follows_cuda_and_cpu_is_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "gpu"])
def test_cuda_names_need_cuda(name):
    if torch.cuda.is_available():
        assert resolve_device(name).type == "cuda"
    else:
        with pytest.raises(ConfigError, match=f"^finetune.accelerator '{name}' requested but CUDA is not available"):
            resolve_device(name, setting="finetune.accelerator")


def test_unknown_device_is_one_line_naming_the_setting():
    with pytest.raises(ConfigError) as error:
        resolve_device("quantum", setting="linear.device")
    assert str(error.value).startswith("linear.device 'quantum' is not a torch device") and "\n" not in str(error.value)


def test_every_part_resolves_devices_and_checks_finiteness_with_the_one_function():
    from unirep import features
    from unirep.estimators import agreement as estimators_agreement
    from unirep.estimators import base as estimators_base
    from unirep.finetune import select
    from unirep.probes import base as probes_base
    from unirep.probes import linear

    assert features.check_finite is check_finite and estimators_base.check_finite is check_finite
    assert probes_base.check_finite is check_finite and linear.resolve_device is resolve_device
    assert estimators_agreement.check_finite is check_finite
    assert features.resolve_device is resolve_device and select.resolve_device is resolve_device
    assert features.ExtractionSettings(device="auto").resolved_device() == resolve_device("auto")


def test_library_versions_are_the_installed_distributions():
    versions = library_versions()
    assert versions["unirep"] == unirep.__version__
    for package in ("numpy", "torch", "timm", "lightning", "scikit-learn"):
        assert versions[package] == metadata.version(package)
    assert set(versions) <= {"python", *VERSIONED_PACKAGES}
    assert library_versions(("numpy", "no-such-distribution-xyz")) == {"python": versions["python"],
                                                                       "numpy": versions["numpy"]}


def test_records_and_source_checkpoints_collect_versions_the_same_way():
    from unirep import evaluate
    from unirep.sources import train

    assert evaluate.library_versions is library_versions and train.library_versions is library_versions


def test_check_finite_counts_the_rows_holding_nan_or_inf():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(50, 3, 4)).astype(np.float32)
    bad_rows = [2, 7, 7, 31]
    array[bad_rows[0], 0, 1] = np.nan
    array[bad_rows[1], 2, 3] = np.inf
    array[bad_rows[2], 1, 1] = -np.inf  # a second bad value in the same row counts once
    array[bad_rows[3], 0, 0] = np.nan
    with pytest.raises(DataError) as error:
        check_finite(array, "train features", hint="try again")
    assert str(error.value) == f"train features: {len(set(bad_rows))} row(s) contain NaN/Inf; try again"
    check_finite(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0), "train features")  # finite: no error
    with pytest.raises(DataError, match="^scores: 2 row"):
        check_finite(np.array([1.0, np.nan, np.inf]), "scores")
    with pytest.raises(DataError, match="^value: 1 row"):
        check_finite(np.array(np.nan), "value")


def test_cpu_info_reads_the_first_processors_field(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
                       "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    monkeypatch.setattr(runtime, "Path", lambda _: cpuinfo)
    assert runtime.cpu_info("vendor_id") == "AuthenticAMD"
    assert runtime.cpu_info("model name") == "AMD EPYC 7B13"
    assert runtime.cpu_info("model") == ""  # a field name is matched whole, not as a prefix of "model name"
    monkeypatch.setattr(runtime, "Path", lambda _: tmp_path / "missing")
    assert runtime.cpu_info("vendor_id") == ""
