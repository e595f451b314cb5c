"""The `ood` protocol: OoD benchmarks inside `unirep eval` / `unirep run` (`protocols: [linear, ood]`), writing the same
fixed-schema records as `unirep ood`, under the eval's out folder (`<out>/ood-records/`), where `unirep build` finds
them for its OoD section.

An OoD benchmark spans several tasks (ID task, near and far sets from others), so the protocol has no (task, seed)
jobs (`per_task = False`): `evaluate` runs it once after the tasks, on the run's backbones, with the run's extraction
settings, feature cache (the entries the tasks just filled) and linear-probe section. Its own settings are the `ood`
section (`unirep.config.OodProtocolConfig`):

    unirep eval mobilenetv2_100.packaged_in1k --tasks fashion-mnist --protocols linear,ood \\
        ood.benchmarks=[fashion-mnist-ood] ood.scores=[energy,knn,vim]

Without `ood.benchmarks`, the benchmarks are the shipped ones whose ID task is one of the run's tasks. Everything is
checked when the protocol is created, before any task runs: unknown benchmarks or scores, a score that needs a head
with `classifier=none`, no benchmark at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from unirep.config import to_container
from unirep.errors import ConfigError
from unirep.ood.benchmarks import list_benchmarks, load_benchmark_card
from unirep.ood.run import OodConfig, checked_scores, run_ood
from unirep.protocols import PROTOCOLS, Protocol

# The eval settings an OoD run takes over unchanged (same meaning in OodConfig).
SHARED_SETTINGS = ("backbones", "out", "cache_dir", "max_input_size", "batch_size", "num_workers", "device",
                   "precision", "channels_last", "force", "linear")


class OodProtocol(Protocol):
    """`unirep ood` on the eval's backbones, after its tasks; one OodRecord per (backbone, benchmark, classifier,
    score)."""

    per_task = False

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.ood_cfg = ood_config(cfg)

    def run_after_tasks(self) -> None:
        records = run_ood(self.ood_cfg)
        print(f"unirep: ood protocol: {len(records)} OoD records in {Path(self.ood_cfg.out) / 'ood-records'} "
              f"({', '.join(self.ood_cfg.benchmarks)})", file=sys.stderr)


def ood_config(cfg: DictConfig) -> DictConfig:
    """The `unirep ood` config of an eval config's `ood` protocol, checked (one ConfigError line on bad input)."""
    section = cfg.ood
    benchmarks = list(section.benchmarks) or default_benchmarks(list(cfg.tasks))
    if not benchmarks:
        raise ConfigError(f"the ood protocol has no benchmark: no shipped OoD benchmark has one of the run's tasks "
                          f"{list(cfg.tasks)} as ID task; set ood.benchmarks=[...] (shipped: "
                          f"{', '.join(list_benchmarks())}) or drop ood from protocols")
    for name in benchmarks:
        load_benchmark_card(name)  # an unknown name is refused here, naming the shipped ones
    plain = to_container(cfg)
    shared = {key: plain[key] for key in SHARED_SETTINGS}
    if cfg.device == "auto" and cfg.accelerator != "auto":  # as the eval's own extraction narrows it
        shared["device"] = "cpu" if cfg.accelerator == "cpu" else "cuda"
    ood_cfg = OmegaConf.merge(OmegaConf.structured(OodConfig), {**shared, "benchmarks": benchmarks,
                                                                "scores": list(section.scores),
                                                                "classifier": section.classifier})
    checked_scores(ood_cfg)
    return ood_cfg


def default_benchmarks(tasks: list[str]) -> list[str]:
    """The shipped benchmarks whose ID task is one of `tasks` (suite names are resolved first)."""
    from unirep.tasks import resolve_tasks

    names = set(resolve_tasks(tasks))
    return [b for b in list_benchmarks() if load_benchmark_card(b).id_task in names]


PROTOCOLS.add("ood", OodProtocol)

__all__ = ["OodProtocol", "default_benchmarks", "ood_config"]
