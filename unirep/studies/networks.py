"""The networks of the fine-tuning / OoD study and the strategies that make them (registry STRATEGIES).

A strategy turns (benchmark, seed) into networks, each a backbone (its features) and a linear head (its logits):

- `frozen`: the pretrained backbone with unirep's linear probe on its frozen features (C chosen on ID val, fitted on
  ID train, like LP-FT's head). One network: the probe is deterministic, so it has no seeds.
- `full`: full fine-tuning (unirep.finetune, mode full), the network's own head; one network per seed.
- `lp-ft`: LP-FT (Kumar et al. 2022; mode lp-ft), the network's own head; one network per seed.
- `zero-shot` (CLIP backbones, `layer: unit-embedding`): the pretrained image tower with CLIP's zero-shot head of the
  ID class names (unirep.zero_shot; its logits are CLIP's zero-shot logits, so MCM applies).
- `wise`: WiSE-FT (unirep.finetune.wise) between θ_0 = the `frozen` network (or, with `wise_theta_0: zero-shot`, the
  `zero-shot` one: the paper's choice for CLIP) and each of `wise_endpoints`' fine-tuned networks, one network per
  (endpoint, seed, α). At α = 0 and 1 the interpolation returns an endpoint's state exactly (tested), so those two
  are the endpoint networks themselves and their features come from the cache.
- `wise-bn`: the same networks strictly between the endpoints (0 < α < 1), with BatchNorm statistics recomputed on ID
  train through the interpolated network (unirep.finetune.wise.recompute_batchnorm; interpolated statistics are not
  the interpolated network's own). Labels `<run>@wise<α>-bn`.

Every fine-tuning run trains on ID train only and selects on ID val (refit policy `finetune.refit`, recorded); its
weights are kept under `<out>/networks/<benchmark>/<label>.safetensors` (with a JSON of what it selected, written
last), so a re-run loads them instead of training again, and its sweep is kept by unirep.finetune.saved_selection.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save

from unirep.backbones.base import Backbone
from unirep.config import backbone_specs
from unirep.errors import ConfigError
from unirep.fileio import atomic_write_bytes, atomic_write_json
from unirep.finetune.wise import (
    checked_alphas,
    recompute_batchnorm,
    rename_network,
    state_digest,
    wise_classifier,
    wise_label,
)
from unirep.metrics import Metric
from unirep.ood.benchmarks import OodBenchmark, SetSelection
from unirep.ood.scores import LinearHead
from unirep.probes import FeatureSplit, create_probe
from unirep.registry import Registry
from unirep.results import slug
from unirep.tasks.base import ImageSet, stratified_take

THETA_0 = ("frozen", "zero-shot")  # WiSE-FT's α = 0 network
FINETUNED = ("full", "lp-ft")  # the strategies that fine-tune (and can be WiSE endpoints); their unirep.finetune mode
WISE = ("wise", "wise-bn")  # the interpolating strategies
NETWORKS_DIR = "networks"


@dataclass(frozen=True)
class Plan:
    """One network of the study, before it is built: records are filed under `label`."""

    label: str
    base: str  # the pretrained backbone's name
    strategy: str
    seed: int | None = None
    alpha: float | None = None
    endpoint: str | None = None

    @property
    def group(self) -> str:
        """The row of the strategy comparison: seeds of one group are averaged."""
        if self.strategy in WISE:
            return f"{self.strategy}({self.endpoint}) a={self.alpha:g}"
        return self.strategy

    @property
    def classifier(self) -> str:
        """The head its logits come from: the linear probe (frozen), its own (fine-tuned), the interpolated one."""
        return "wise-head" if self.strategy in WISE else {"frozen": "linear", "zero-shot": "zero-shot"}.get(
            self.strategy, "own-head")

    def same_network(self, theta_0: str = "frozen") -> tuple[str, str] | None:
        """(label, classifier) of the network this one *is*, where it is another's: WiSE at α = 1 is its fine-tuned
        endpoint, at α = 0 the zero-shot network when that is θ_0 (the interpolation returns them exactly). With
        `wise_theta_0: frozen`, θ_0's head is the floored fold of the frozen probe (NetworkBuilder.wise_theta_0), not
        the frozen network's own head, so α = 0 is scored itself."""
        if self.strategy != "wise" or self.alpha not in (0.0, 1.0):
            return None
        if self.alpha == 0.0:
            if theta_0 == "frozen":
                return None
            return f"{self.base}@{theta_0}", Plan(theta_0, self.base, theta_0).classifier
        return finetuned_label(self.base, self.endpoint, self.seed), "own-head"

    def describe(self) -> dict:
        return {"base": self.base, "strategy": self.strategy, "group": self.group, "seed": self.seed,
                "alpha": self.alpha, "endpoint": self.endpoint}


@dataclass
class Network:
    """A built network: features from `backbone`, logits from `head`; `classifier` names the head's kind."""

    backbone: Backbone
    head: LinearHead
    classifier: str
    hyperparameters: dict = field(default_factory=dict)


STRATEGIES: Registry[Callable[[DictConfig, str], Iterator[Plan]]] = Registry("fine-tuning strategy")
register_strategy = STRATEGIES.register


@register_strategy("frozen")
def frozen_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    yield Plan(f"{base}@frozen", base, "frozen")


@register_strategy("zero-shot")
def zero_shot_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    yield Plan(f"{base}@zero-shot", base, "zero-shot")


@register_strategy("full")
def full_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    for seed in cfg.seeds:
        yield Plan(finetuned_label(base, "full", seed), base, "full", seed)


@register_strategy("lp-ft")
def lp_ft_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    for seed in cfg.seeds:
        yield Plan(finetuned_label(base, "lp-ft", seed), base, "lp-ft", seed)


@register_strategy("wise")
def wise_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    for endpoint in cfg.wise_endpoints:
        for seed in cfg.seeds if cfg.wise_seeds is None else cfg.wise_seeds:
            for alpha in checked_alphas(cfg.wise_alphas):
                yield Plan(wise_label(finetuned_label(base, endpoint, seed), alpha), base, "wise", seed, alpha,
                           endpoint)


@register_strategy("wise-bn")
def wise_bn_plans(cfg: DictConfig, base: str) -> Iterator[Plan]:
    for plan in wise_plans(cfg, base):
        if 0.0 < plan.alpha < 1.0:
            yield replace(plan, label=f"{plan.label}-bn", strategy="wise-bn")


def finetuned_label(base: str, strategy: str, seed: int) -> str:
    return f"{base}@{strategy}-seed{seed}"


def check_strategies(cfg: DictConfig) -> list[str]:
    """The study's strategies, each registered, and its settings, refused in one line before any work."""
    names = list(cfg.strategies)
    if not names:
        raise ConfigError(f"strategies is empty: name some of {STRATEGIES.list()}")
    for name in names:
        STRATEGIES.get(name)  # unknown names raise with close-name suggestions
    if len(set(names)) != len(names):
        raise ConfigError(f"strategies {names} name one strategy twice: keep one of each")
    for key in ("seeds", "wise_seeds"):
        seeds = cfg[key]
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"{key}={list(seeds)} must be a non-empty list of distinct fine-tuning seeds")
    if set(WISE) & set(names):
        checked_alphas(cfg.wise_alphas)
        bad = [e for e in cfg.wise_endpoints if e not in FINETUNED]
        if bad or not cfg.wise_endpoints:
            raise ConfigError(f"wise_endpoints={list(cfg.wise_endpoints)}: WiSE-FT interpolates towards a "
                              f"fine-tuned network, give some of {list(FINETUNED)}")
    if cfg.wise_theta_0 not in THETA_0:
        raise ConfigError(f"wise_theta_0={cfg.wise_theta_0!r} must be one of {list(THETA_0)}: the network WiSE-FT "
                          "starts from (the frozen network with the linear probe, or CLIP's zero-shot head)")
    if "zero-shot" in names or (set(WISE) & set(names) and cfg.wise_theta_0 == "zero-shot"):
        for spec in backbone_specs(cfg):
            if not spec.name.startswith(("clip:", "random:clip:")) or spec.layer != "unit-embedding":
                raise ConfigError(f"backbone {spec.display_name!r}: the zero-shot head needs a CLIP backbone with "
                                  "layer unit-embedding (its logits are CLIP's only on unit image embeddings), e.g. "
                                  "{name: clip:ViT-B-32-quickgelu.openai, weights: FILE, layer: unit-embedding}")
    if cfg.max_train is not None and cfg.max_train < 2:
        raise ConfigError(f"max_train={cfg.max_train}: give at least 2 ID training images per class, or null (all)")
    return names


def plans(cfg: DictConfig, base: str) -> list[Plan]:
    """Every network of one backbone, strategy by strategy in the order `strategies` lists them, each over its seeds:
    an interrupted run has every seed of the first strategies (the comparison the conclusion rests on comes first)."""
    return [p for name in cfg.strategies for p in STRATEGIES.get(name)(cfg, base)]


# ------------------------------------------------------------------------------------------------ ID data


def subsample_id_train(bench: OodBenchmark, max_train: int | None) -> OodBenchmark:
    """The benchmark with a stratified subsample of `max_train` ID training images (seeded by the card's seed);
    everything trains and fits on it, and its digest and counts say so."""
    selection = bench.sets["id/train"]
    if max_train is None or max_train >= len(selection.ids):
        return bench
    keep = np.sort(stratified_take(selection.labels, np.arange(len(selection.ids)), max_train,
                                   np.random.default_rng(bench.card.seed)))
    smaller = SetSelection(selection.task, selection.split, selection.rows[keep],
                           tuple(selection.ids[i] for i in keep), selection.labels[keep])
    return replace(bench, sets={**bench.sets, "id/train": smaller})


def benchmark_images(bench: OodBenchmark, key: str) -> ImageSet:
    """The images of set `key` with the benchmark's labels (ID: 0..K-1 in the card's class order)."""
    selection = bench.sets[key]
    images = bench.tasks[selection.task].split(selection.split).subset(selection.rows)
    images.labels = np.asarray(selection.labels)
    return images


# ------------------------------------------------------------------------------------------------ networks


class NetworkBuilder:
    """Builds (or loads) the networks of one (backbone, benchmark), each at most once per run.

    `features(backbone)` returns the benchmark's features of a backbone (the study's cache); the frozen network's
    probe is fitted on those of ID train / val.
    """

    def __init__(self, cfg: DictConfig, bench: OodBenchmark, pretrained: Backbone, base: str, out: Path,
                 features: Callable[[Backbone], dict[str, np.ndarray]]):
        self.cfg, self.bench, self.pretrained, self.base, self.out = cfg, bench, pretrained, base, out
        self.features = features
        self.num_classes = len(bench.id_classes)
        self._frozen: Network | None = None
        self._zero_shot: Network | None = None
        self._finetuned: dict[tuple[str, int], torch.nn.Module] = {}

    def build(self, plan: Plan) -> Network:
        if plan.strategy == "frozen":
            return self.frozen()
        if plan.strategy == "zero-shot":
            return self.zero_shot()
        if plan.strategy in FINETUNED:
            return self._own_head(self.finetuned(plan.strategy, plan.seed), {"finetune": self._meta(plan)})
        return self.wise(plan)

    def frozen(self) -> Network:
        """The pretrained backbone with the linear probe: C chosen on ID val, then fitted on ID train."""
        if self._frozen is None:
            start = time.perf_counter()
            features = self.features(self.pretrained)
            labels = {k: self.bench.sets[k].labels for k in ("id/train", "id/val")}
            train = FeatureSplit(features["id/train"], labels["id/train"])
            from unirep.probes.linear import LinearProbe

            selector = create_probe("linear", **LinearProbe.settings_from_config(self.cfg))
            selector.select(train, FeatureSplit(features["id/val"], labels["id/val"]), Metric.TOP1)
            C = float(selector.selected_params_["C"])
            probe = create_probe("linear", C=C, max_iter=self.cfg.linear.max_iter).fit(train.X, train.y)
            hyper = {"C": C, "val_top1": float(selector.val_score_), "fit_on": "id/train", "selected_on": "id/val",
                     "probe_s": round(time.perf_counter() - start, 3)}
            self._frozen = Network(self.pretrained, LinearHead.from_probe(probe), "linear", hyper)
            self._frozen_probe = probe
        return self._frozen

    def wise_theta_0(self) -> Network:
        """WiSE-FT's θ_0. For `wise_theta_0: frozen`, the frozen network with its probe folded the way LP-FT folds its
        probe head (standardisation scales floored, unirep.finetune.probe_head): the state LP-FT's fine-tuning starts
        from, as WiSE-FT presumes. The exact fold multiplies near-dead units by up to 1/scale ~ 1e5, and any
        interpolated backbone moves those units (ID top-1 82 -> 10 % at alpha = 0.25 on opencv-digits)."""
        if self.cfg.wise_theta_0 != "frozen":
            return self.theta_0()
        frozen = self.frozen()
        from unirep.finetune.probe_head import floored_scale

        head = LinearHead.from_probe(self._frozen_probe, scale=floored_scale(self._frozen_probe.scale_))
        return replace(frozen, head=head, hyperparameters={**frozen.hyperparameters,
                                                          "head_fold": "standardisation scales floored (LP-FT's)"})

    def zero_shot(self) -> Network:
        """The pretrained CLIP tower with CLIP's zero-shot head of the ID class names (default templates)."""
        if self._zero_shot is None:
            from unirep.ood.clip_scores import ZeroShotLinearHead
            from unirep.zero_shot import zero_shot_head

            head = zero_shot_head(self.pretrained, self.bench.id_classes, cache_dir=self.cfg.cache_dir)
            self._zero_shot = Network(self.pretrained, ZeroShotLinearHead.from_zero_shot(head), "zero-shot",
                                      {"zero_shot": head.record()})
        return self._zero_shot

    def theta_0(self) -> Network:
        return self.zero_shot() if self.cfg.wise_theta_0 == "zero-shot" else self.frozen()

    def finetuned(self, mode: str, seed: int):
        """The fine-tuned Classifier of (mode, seed): loaded from `<out>/networks/`, else trained and saved."""
        key = (mode, seed)
        if key not in self._finetuned:
            label = finetuned_label(self.base, mode, seed)
            weights, meta = self.network_files(label)
            from unirep.finetune.module import Classifier
            from unirep.finetune.saved_selection import selection_key

            ft = OmegaConf.merge(self.cfg.finetune, {"mode": mode})
            train, val = benchmark_images(self.bench, "id/train"), benchmark_images(self.bench, "id/val")
            key = selection_key(self.pretrained, train, val, self.num_classes, Metric.TOP1, ft, seed)
            net = Classifier(copy.deepcopy(self.pretrained), self.num_classes, seed)
            if not self.cfg.force and _saved_key(meta) == key and weights.is_file():
                net.load_state_dict(load_file(str(weights)))
            else:
                if meta.is_file() and not self.cfg.force:
                    print(f"unirep: {meta} was fine-tuned with other settings or data; fine-tuning again",
                          file=sys.stderr)
                net = self._train(ft, seed, label, weights, meta, train, val, key)
            rename_network(net, label, f"finetuned:{state_digest(net.state_dict())}")
            self._finetuned[key] = net.eval()
        return self._finetuned[key]

    def _train(self, ft: DictConfig, seed: int, label: str, weights: Path, meta: Path, train: ImageSet,
               val: ImageSet, key: str):
        from unirep.finetune.saved_selection import SELECTIONS_DIR, SavedSelection
        from unirep.finetune.select import finetune

        mode = ft.mode
        saved = SavedSelection(self.out / SELECTIONS_DIR / slug(label), key, reuse=not self.cfg.force)
        print(f"unirep: fine-tuning {label} on {self.bench.name} ({len(train.ids)} ID train images)",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = finetune(self.pretrained, train, val, self.num_classes, Metric.TOP1, ft, seed, saved)
        seconds = time.perf_counter() - start
        state = {k: v.detach().cpu().contiguous() for k, v in result.net.state_dict().items()}
        atomic_write_bytes(weights, save(state))
        atomic_write_json(meta, {  # written last: a network whose JSON exists is complete
            "label": label, "key": key, "benchmark": self.bench.name, "mode": mode, "seed": seed, "refit": result.refit,
            "precision": result.precision, "choices": [asdict(c) for c in result.choices], "curve": result.curve,
            "timings": {**{k: round(v, 3) for k, v in result.timings.items()}, "finetune_s": round(seconds, 3)},
            "selection_resumed": result.selection_resumed, "weights_file": weights.name,
            "finetune": OmegaConf.to_container(ft, resolve=True), "id_train": len(train.ids),
        })
        return result.net

    def wise(self, plan: Plan) -> Network:
        theta_0 = self.wise_theta_0()
        finetuned = self.finetuned(plan.endpoint, plan.seed)  # first: the record names its fine-tuning choices
        head = "the linear-probe head" if self.cfg.wise_theta_0 == "frozen" else "CLIP's zero-shot head"
        bn = "recomputed on ID train through the interpolated network" if plan.strategy == "wise-bn" else "interpolated"
        hyper = {"alpha": plan.alpha, "endpoint": finetuned_label(self.base, plan.endpoint, plan.seed), "batchnorm": bn,
                 "theta_0": f"{self.base}@{self.cfg.wise_theta_0} (pretrained backbone + {head})",
                 "interpolated": "every floating-point state entry, BatchNorm running statistics included; the "
                                 f"head between {head} and the fine-tuned head",
                 "finetune": self._meta(replace(plan, strategy=plan.endpoint))}
        if plan.alpha == 0.0:  # θ_0 exactly: that network and its features
            return replace(theta_0, classifier="wise-head", hyperparameters={**theta_0.hyperparameters, **hyper})
        if plan.alpha == 1.0:  # θ_1 exactly
            return self._own_head(finetuned, hyper, classifier="wise-head")
        pretrained = self._with_theta_0_head(finetuned, theta_0.head)
        net = wise_classifier(pretrained, finetuned, plan.alpha, plan.label)
        if plan.strategy == "wise-bn":
            from unirep.training.data import cache_split

            size = self.pretrained.data_config.input_size
            images = cache_split(benchmark_images(self.bench, "id/train"), self.pretrained.data_config,
                                 f"id/train @{size}px").images
            hyper["batchnorm_layers"] = recompute_batchnorm(net, images)
            rename_network(net, plan.label, f"wise-bn:alpha={plan.alpha:g}:{state_digest(net.state_dict())}")
        return self._own_head(net, hyper, classifier="wise-head")

    def _with_theta_0_head(self, like, head: LinearHead):
        """θ_0 as a Classifier: the pretrained backbone and θ_0's head (float32)."""
        from unirep.finetune.module import Classifier

        net = Classifier(copy.deepcopy(self.pretrained), self.num_classes, 0)
        with torch.no_grad():
            net.head.weight.copy_(torch.as_tensor(head.weight, dtype=net.head.weight.dtype))
            net.head.bias.copy_(torch.as_tensor(head.bias, dtype=net.head.bias.dtype))
        return net.to(next(like.parameters()).device).eval()

    @staticmethod
    def _own_head(net, hyperparameters: dict, classifier: str = "own-head") -> Network:
        weight, bias = (p.detach().cpu().double().numpy() for p in (net.head.weight, net.head.bias))
        return Network(net.backbone, LinearHead(weight, bias), classifier, hyperparameters)

    def _meta(self, plan: Plan) -> dict:
        _, meta = self.network_files(finetuned_label(self.base, plan.strategy, plan.seed))
        raw = json.loads(meta.read_text(encoding="utf-8"))
        last = raw["choices"][-1]
        return {"mode": raw["mode"], "seed": raw["seed"], "lr": last.get("lr"), "epochs": last.get("epochs"),
                "val_top1": last.get("val_score"), "refit": raw["refit"], "phases": raw["choices"],
                "timings": raw["timings"], "id_train": raw["id_train"],
                "weights_file": str(meta.with_name(raw["weights_file"]).relative_to(self.out))}

    def network_files(self, label: str) -> tuple[Path, Path]:
        folder = self.out / NETWORKS_DIR / slug(self.bench.name)
        return folder / f"{slug(label)}.safetensors", folder / f"{slug(label)}.json"


def _saved_key(meta: Path) -> str | None:
    """The selection key a saved network was fine-tuned under (None: none saved, or unreadable)."""
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["FINETUNED", "Network", "NetworkBuilder", "Plan", "STRATEGIES", "benchmark_images", "check_strategies",
           "finetuned_label", "plans", "register_strategy", "subsample_id_train"]
