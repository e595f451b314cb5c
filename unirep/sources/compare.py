"""Train several source-training presets with shared overrides, then hand them to the evaluation spine.

A comparison preset (configs/sources/compare.yaml) lists presets; each is trained into `<out>/<preset>`, and
`<out>/eval.yaml` is written so that `unirep eval --config <out>/eval.yaml` measures their universality with
the usual probes and records, next to `<out>/random-init` (the first preset's networks, untrained).
`<out>/comparison.json` keeps each run's source metrics and wall time. With `seeds: [0, 1, 2]` every preset and
the control is trained once per seed (`<out>/<preset>/seed<k>`, evaluated as `source:<preset>@seed<k>`), and the
leaderboard built from that evaluation groups those labels into mean ± 95 % t-interval rows
(unirep.leaderboard.seeds). A re-run reads finished seeds back instead of training them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf

from unirep.config import load_config, to_container
from unirep.errors import ConfigError
from unirep.fileio import atomic_write_json, atomic_write_text
from unirep.resources import CONFIGS_DIR, packaged_config

PRESETS_DIR = CONFIGS_DIR / "sources"
RANDOM_INIT = "random-init"
SEED_SUFFIX = "@seed"


@dataclass
class ComparisonConfig:
    compare: list[str] = MISSING  # preset names (configs/sources/<name>.yaml) or paths
    out: str = "runs/sources/compare"
    overrides: list[str] = field(default_factory=list)  # dotlist applied to every run
    # The untrained control: the first preset's network(s) with the same overrides and seed but zero epochs,
    # evaluated as `source:random-init`. What any scheme gains over it is what source training taught.
    random_init: bool = True
    # Training seeds: each preset (and the random-init control) is trained once per seed into
    # `<out>/<preset>/seed<k>` and evaluated as `source:<preset>@seed<k>`; the seed sets the training subset, the
    # initialisation, the batch order and the augmentation draws. None: one run per preset with the preset's own
    # `seed`, in `<out>/<preset>` as `source:<preset>` (one seed says nothing about seed variance).
    seeds: list[int] | None = None
    eval: dict[str, Any] = field(default_factory=lambda: {"tasks": ["offline"], "protocols": ["linear", "knn"]})


def is_comparison(path: str | Path) -> bool:
    """True when the YAML at `path` is a comparison preset (it has a `compare:` list)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "compare" in raw


def resolve_preset(name: str, base: Path = PRESETS_DIR) -> Path:
    """A preset path as given, else `<base>/<name>.yaml`, else unirep's own `configs/sources/<name>.yaml` (so a
    comparison file anywhere can name the shipped presets, and presets beside it take precedence), else unirep's
    own copy of a path written as in the checkout (`configs/sources/quickstart.yaml` works from any directory)."""
    folders = list(dict.fromkeys([base, PRESETS_DIR]))
    for candidate in (Path(name), *(f / n for f in folders for n in (name, f"{name}.yaml"))):
        if candidate.is_file():
            return candidate
    if packaged_config(name) is not None:
        return packaged_config(name)
    known = sorted({p.stem for f in folders for p in f.glob("*.yaml")})
    raise ConfigError(f"source preset {name!r} not found (neither a file nor <name>.yaml in "
                      f"{', '.join(map(str, folders))}); presets: {known}")


def train_comparison(path: str | Path, dotlist: list[str] | None = None) -> tuple[Path, list[dict]]:
    """Train every preset of the comparison at `path`; returns its output folder and one summary row per preset."""
    from unirep.sources.config import load_source_config
    from unirep.sources.schemes import SCHEMES
    from unirep.sources.train import train_source

    own_keys = set(ComparisonConfig.__dataclass_fields__)
    own = [item for item in dotlist or [] if item.split("=", 1)[0].split(".", 1)[0] in own_keys]
    per_run = [item for item in dotlist or [] if item not in own]
    path = resolve_preset(str(path))  # e.g. the quickstart's `sources: configs/sources/quickstart.yaml`, anywhere
    cfg = load_config(ComparisonConfig, path, own)
    out = Path(cfg.out)
    seeds = check_seeds(cfg.seeds, path, [*cfg.overrides, *per_run])
    presets = [(Path(name).stem, name, []) for name in cfg.compare]
    if cfg.random_init and presets:
        presets.append((RANDOM_INIT, cfg.compare[0], ["optim.epochs=0"]))  # last word: no override trains it
    runs = [(preset, name, pinned, None) for preset, name, pinned in presets] if seeds is None else \
        [(preset, name, pinned, seed) for seed in seeds for preset, name, pinned in presets]  # seed by seed
    # Every run's config is resolved before anything trains, so a bad preset or override fails at once.
    run_cfgs = [(preset, seed, load_source_config(
        resolve_preset(name, Path(path).parent),
        [*cfg.overrides, *per_run, *pinned, *([] if seed is None else [f"seed={seed}"]),
         f"out={run_folder(out, preset, seed)}"]))
        for preset, name, pinned, seed in runs]
    if cfg.random_init and run_cfgs:
        control = run_cfgs[-1][2]
        if control.fsft.enabled or SCHEMES.get(control.scheme).fsft:
            raise ConfigError(f"random_init is the first preset's networks untrained, but {cfg.compare[0]!r} has an "
                              "FSFT stage that would train them: list a preset without FSFT first (e.g. "
                              "reference) or set random_init=false")
    rows, backbones = [], []
    for preset, seed, run_cfg in run_cfgs:
        result = train_source(run_cfg)  # a finished run of the same config is read back, not retrained
        rows.append({**summary_row(preset, result), "seed": int(run_cfg.seed)})
        backbones.append({"name": str(result.out), "input_size": int(run_cfg.data.input_size),
                          "label": source_label(preset, seed)})
    if rows and rows[0]["checkpoint"] is not None:  # global rank 0 only
        atomic_write_json(out / "comparison.json", {"runs": rows, "config": to_container(cfg)})
        eval_cfg = {"backbones": backbones, **to_container(cfg.eval), "out": str(out / "eval")}
        atomic_write_text(out / "eval.yaml", OmegaConf.to_yaml(OmegaConf.create(eval_cfg)))
    return out, rows


def run_folder(out: Path, preset: str, seed: int | None) -> Path:
    return out / preset if seed is None else out / preset / f"seed{seed}"


def source_label(preset: str, seed: int | None) -> str:
    """The backbone label of one run: `source:<preset>`, or `source:<preset>@seed<k>` when trained per seed (the
    leaderboard and the comparison report group labels that differ only by that suffix)."""
    return f"source:{preset}" if seed is None else f"source:{preset}{SEED_SUFFIX}{seed}"


def check_seeds(seeds, path: Path, run_overrides: list[str]) -> list[int] | None:
    """The comparison's seed list, checked: distinct integers >= 0, at least one; and no per-run `seed=` beside it."""
    if seeds is None:
        return None
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds={seeds} in {path} is invalid: it must be a list of distinct integers >= 0, e.g. "
                          "seeds=[0,1,2] (or null for one run per preset with its own seed)")
    pinned = [item for item in run_overrides if item.split("=", 1)[0] == "seed"]
    if pinned:
        raise ConfigError(f"{pinned[0]!r} conflicts with the comparison's seeds={seeds} ({path}): set the training "
                          "seeds with seeds=[...] only")
    return seeds


def summary_row(preset: str, result) -> dict:
    """Preset, scheme, feature size, the source val top-1 of the network on the task's own classes, seconds."""
    original = next((ls.name for ls in result.label_sets if ls.kind == "original"), None)
    top1 = next((m[original]["top1"] for m in result.metrics.values() if original in m), None)
    return {"preset": preset, "scheme": result.scheme, "networks": len(result.networks),
            "num_features": sum(t.network.feature_dim for t in result.networks), "source_val_top1": top1,
            "metrics": result.metrics, "seconds": round(result.seconds, 1),
            "checkpoint": None if result.checkpoint is None else str(result.out)}
