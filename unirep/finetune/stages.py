"""A backbone's parameters, partitioned into stages: what `last-k` fine-tuning unfreezes.

For a timm network the stages are timm's own `feature_info` (the same stages `layer=stage<i>` names): stage i
holds every parameter computed after stage i-1's output up to stage i's output, so the stem belongs to stage 0.
What follows the last stage on the way to the pooled features (EfficientNet's conv_head, a ViT's final norm)
belongs to the last stage. The timm classifier is never used (fine-tuning trains its own head on the pooled
features) and always stays frozen; so do the stages after a backbone's `layer`, which its features never reach.

Other backbones (e.g. unirep's source-trained networks) get their top-level child modules as stages, looking
through wrappers that hold a single child.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unirep.backbones.base import Backbone
from unirep.errors import ConfigError


@dataclass
class Stage:
    """One stage: its name and its parameters (name -> tensor, names relative to the backbone)."""

    name: str
    parameters: dict[str, nn.Parameter]


@dataclass
class StagePartition:
    """The used stages in forward order, and the parameters the features never depend on (always frozen)."""

    stages: list[Stage]
    unused: dict[str, nn.Parameter]

    def trainable(self, last_k: int | None) -> dict[str, nn.Parameter]:
        """Parameters of the last `last_k` stages (all stages when None, none when 0)."""
        chosen = self.stages if last_k is None else self.stages[len(self.stages) - last_k:] if last_k else []
        return {name: p for stage in chosen for name, p in stage.parameters.items()}


def partition_stages(backbone: Backbone) -> StagePartition:
    """The backbone's stages (see the module docstring).

    Example:
        >>> partition = partition_stages(create_backbone("random:resnet18"))
        >>> [s.name for s in partition.stages], list(partition.unused)
        (['act1', 'layer1', 'layer2', 'layer3', 'layer4'], ['model.fc.weight', 'model.fc.bias'])
    """
    model = getattr(backbone, "model", None)
    if isinstance(model, nn.Module) and getattr(model, "feature_info", None):
        partition = _timm_stages(backbone, model)
    else:
        partition = _child_stages(backbone)
    if not partition.stages:
        raise ConfigError(f"backbone {backbone.name!r} has no trainable parameters: fine-tuning needs a network "
                          "(raw pixels cannot be fine-tuned; compare them with the linear and knn probes)")
    return partition


def _timm_stages(backbone: Backbone, model: nn.Module) -> StagePartition:
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    stage_modules = [info["module"] for info in model.feature_info]
    ends = [max(i for name, i in order.items() if name == m or name.startswith(m + ".")) for m in stage_modules]
    classifier = _classifier_name(model)
    used_stages = len(ends) if backbone.layer is None else backbone.feature_layers.index(backbone.layer) + 1
    stages = [Stage(stage_modules[i], {}) for i in range(used_stages)]
    unused: dict[str, nn.Parameter] = {}
    for name, parameter in model.named_parameters():
        owner = name.rpartition(".")[0]
        full_name = f"model.{name}"
        if classifier and (owner == classifier or owner.startswith(classifier + ".")):
            unused[full_name] = parameter
            continue
        # The first stage whose output comes after this parameter's module; past the last stage: the neck.
        index = next((i for i, end in enumerate(ends) if order[owner] <= end), len(ends) - 1)
        if backbone.layer is None or index < used_stages:
            stages[min(index, used_stages - 1)].parameters[full_name] = parameter
        else:
            unused[full_name] = parameter
    return StagePartition([s for s in stages if s.parameters], unused)


def _classifier_name(model: nn.Module) -> str | None:
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    if not isinstance(classifier, nn.Module):
        return None
    return next((name for name, module in model.named_modules() if module is classifier and name), None)


def _child_stages(backbone: Backbone) -> StagePartition:
    root: nn.Module = backbone
    prefix = ""
    while True:
        holders = [(name, child) for name, child in root.named_children() if any(True for _ in child.parameters())]
        if len(holders) != 1 or any(True for _ in root.parameters(recurse=False)):
            break
        name, root = holders[0]
        prefix += f"{name}."
    stages = [Stage(f"{prefix}{name}", {f"{prefix}{name}.{p}": param for p, param in child.named_parameters()})
              for name, child in holders]
    own = {f"{prefix}{name}": p for name, p in root.named_parameters(recurse=False)}
    if own and stages:
        stages[0].parameters.update(own)
    elif own:
        stages = [Stage(prefix.rstrip(".") or "backbone", own)]
    return StagePartition(stages, {})
