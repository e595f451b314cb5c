"""Source-training schemes: how label sets become networks, and whether FSFT follows.

- reference: one network on the source task's own classes.
- muldip: MulDiP-Net, one network per label set trained independently; the backbone concatenates their
  L-inf-normalised features (MuCaLe-Net is the two-label-set case: specific + coarse).
- multitask: one shared trunk, one head per label set, trained jointly with weighted cross-entropies
  (the TPAMI'19 ablation found this much worse than independent networks; unirep measures it).
- fsft / fsft-dr: the reference network, then focused self fine-tuning (fsft-dr also shrinks the feature layer).
  FSFT composes with muldip through `fsft.enabled=true` (configs/sources/muldip-fsft.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unirep.errors import ConfigError
from unirep.registry import Registry
from unirep.sources.label_sets import LabelSet


@dataclass(frozen=True)
class NetworkPlan:
    """One network to train: its name (its folder under nets/) and the label sets of its heads."""

    name: str
    label_sets: tuple[LabelSet, ...]
    index: int  # position in the backbone's concatenation; also offsets the seed of its initialisation


@dataclass(frozen=True)
class Scheme:
    """A scheme: `joint` puts every label set on one shared trunk, else one network per label set.

    `min_label_sets`/`max_label_sets` bound how many label sets it takes; `fsft`/`dr` force those stages.
    """

    name: str
    description: str
    joint: bool = False
    min_label_sets: int = 1
    max_label_sets: int | None = None
    fsft: bool = False
    dr: bool = False
    needs_original: bool = False

    def plan(self, label_sets: Sequence[LabelSet]) -> list[NetworkPlan]:
        self.check(label_sets)
        if self.joint:
            return [NetworkPlan("joint", tuple(label_sets), 0)]
        return [NetworkPlan(ls.name, (ls,), i) for i, ls in enumerate(label_sets)]

    def check(self, label_sets: Sequence[LabelSet]) -> None:
        n = len(label_sets)
        upper = self.max_label_sets if self.max_label_sets is not None else n
        if not self.min_label_sets <= n <= upper:
            wanted = (f"exactly {upper}" if upper == self.min_label_sets
                      else f"at least {self.min_label_sets}" if self.max_label_sets is None
                      else f"{self.min_label_sets}..{upper}")
            raise ConfigError(f"scheme {self.name!r} takes {wanted} label set(s), got {n}: edit `label_sets`")
        if self.needs_original and label_sets[0].kind != "original":
            raise ConfigError(f"scheme {self.name!r} trains on the source task's own classes: its label set must "
                              f"be {{kind: original}}, got kind {label_sets[0].kind!r}")


SCHEMES: Registry[Scheme] = Registry("scheme")


def register_scheme(scheme: Scheme) -> Scheme:
    SCHEMES.add(scheme.name, scheme)
    return scheme


register_scheme(Scheme("reference", "one network on the source task's own classes", max_label_sets=1,
                       needs_original=True))
register_scheme(Scheme("muldip", "MulDiP-Net: one network per label set, trained independently; "
                                 "L-inf-normalised features concatenated", min_label_sets=2))
register_scheme(Scheme("multitask", "one shared trunk with one head per label set, trained jointly",
                       joint=True, min_label_sets=2))
register_scheme(Scheme("fsft", "reference network, then focused self fine-tuning of its last two layers",
                       max_label_sets=1, fsft=True, needs_original=True))
register_scheme(Scheme("fsft-dr", "FSFT with the feature layer shrunk to feature_dim / dr_divisor",
                       max_label_sets=1, fsft=True, dr=True, needs_original=True))


def create_scheme(name: str) -> Scheme:
    """The registered scheme `name`.

    Example:
        >>> create_scheme("muldip").plan(label_sets)  # one NetworkPlan per label set
    """
    return SCHEMES.get(name)


def list_schemes(pattern: str = "*") -> list[str]:
    return SCHEMES.list(pattern)
