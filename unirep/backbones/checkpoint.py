"""unirep's own source-trained checkpoints as backbones (`unirep train-source` writes them).

A checkpoint is a folder holding `weights.safetensors` (every network's tensors, keys `<network>.<param>`) and
`unirep-checkpoint.json` (scheme, label sets, network specs, data config, training config, source split,
final source metrics). The metadata file is written last, so a folder that has it holds a complete checkpoint.

It loads by path through the registry fallback: `create_backbone("runs/sources/muldip")` or
`create_backbone("unirep:runs/sources/muldip")`. Its features are the concatenation over networks of each
network's feature-layer output, L-inf-normalised per example when there are several (MuCaLe/MulDiP-Net).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unirep.backbones import BACKBONES
from unirep.backbones.base import Backbone, DataConfig
from unirep.backbones.source_networks import FEATURE_NORMS, NetworkSpec, SourceNetwork, compose_features
from unirep.errors import ConfigError, WeightsError
from unirep.fileio import atomic_write_bytes, atomic_write_json, sha256_file

FORMAT = "unirep-source-checkpoint"
FORMAT_VERSION = 1
METADATA_FILE = "unirep-checkpoint.json"
WEIGHTS_FILE = "weights.safetensors"
PREFIX = "unirep:"


def write_checkpoint(directory: str | Path, networks: Sequence[tuple[str, nn.Module]], metadata: Mapping[str, Any]
                     ) -> Path:
    """Write the weights of `networks` (name, module) and `metadata`; returns the metadata file's path.

    `metadata` must describe the networks under "networks" (name, spec, label sets) in the same order.
    """
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
               for name, module in networks for key, value in module.state_dict().items()}
    weights = atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    full = {**metadata, "format": FORMAT, "format_version": FORMAT_VERSION, "weights_file": WEIGHTS_FILE,
            "weights_sha256": sha256_file(weights)}
    return atomic_write_json(directory / METADATA_FILE, full)


def read_metadata(directory: Path) -> dict:
    path = directory / METADATA_FILE
    if not path.is_file():
        raise WeightsError(f"{str(directory)!r} is not a finished unirep checkpoint (no {METADATA_FILE}): run or "
                           "resume `unirep train-source` with that output folder")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable checkpoint metadata ({exc}); re-run `unirep train-source`") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: format {metadata.get('format')!r} v{metadata.get('format_version')} is not "
                           f"{FORMAT} v{FORMAT_VERSION}: re-export it with this unirep version")
    return metadata


class SourceCheckpointBackbone(Backbone):
    """The networks of a source-training run; features concatenated (and normalised) as the run's scheme says."""

    def __init__(self, name: str, networks: Sequence[nn.Module], data_config: DataConfig, weights_id: str,
                 feature_norm: str, source_head: tuple[int, str] | None, metadata: dict):
        super().__init__(name, data_config, weights_id)
        self.networks = nn.ModuleList(networks).eval()
        self.feature_norm = feature_norm
        self._normalise = FEATURE_NORMS[feature_norm]
        self._source_head = source_head
        self.metadata = metadata
        self.num_features = sum(int(net.feature_dim) for net in networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return compose_features(self.networks, x, self.feature_norm)

    @property
    def has_source_head(self) -> bool:
        return self._source_head is not None

    def forward_source_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_source_logits(x)[1]

    def forward_with_source_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._source_head is None:
            return self(x), super().forward_source_logits(x)
        index, head = self._source_head
        parts, logits = [], None
        for i, net in enumerate(self.networks):
            features = net.features(x)
            if i == index:
                logits = net.heads[head](features)
            parts.append(self._normalise(features))
        return torch.cat(parts, dim=1), logits

    def identity(self) -> dict:
        return {**super().identity(), "feature_norm": self.feature_norm, "scheme": self.metadata.get("scheme")}


def checkpoint_dir(name: str) -> Path:
    return Path(name.removeprefix(PREFIX)).expanduser()


def create_source_checkpoint(name: str, *, input_size: int | None = None,
                             data_overrides: Mapping[str, Any] | None = None,
                             layer: str | None = None) -> SourceCheckpointBackbone:
    """Load the unirep checkpoint folder `name` (a path, optionally prefixed `unirep:`) as a frozen backbone.

    Example:
        >>> from unirep.backbones import create_backbone
        >>> backbone = create_backbone("unirep:runs/sources/muldip")
        >>> backbone.num_features  # sum of the networks' feature sizes
    """
    from unirep.backbones.timm_backbone import apply_data_overrides
    from unirep.backbones.weights import load_strict, read_state_dict

    if layer is not None:
        raise ConfigError(f"backbone {name!r}: unirep checkpoints give their feature-layer output only; "
                          f"leave layer unset (got {layer!r})")
    directory = checkpoint_dir(name)
    metadata = read_metadata(directory)
    weights_path = directory / metadata["weights_file"]
    digest = sha256_file(weights_path) if weights_path.is_file() else None
    if digest != metadata["weights_sha256"]:
        raise WeightsError(f"{weights_path} is missing or does not match its metadata (sha256 {digest} vs "
                           f"{metadata['weights_sha256']}): the run was interrupted while writing; resume it")
    state = read_state_dict(weights_path)
    networks = []
    for entry in metadata["networks"]:
        prefix = entry["name"] + "."
        network = SourceNetwork(NetworkSpec.from_dict(entry["spec"]))
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        load_strict(network, own, where=f"{weights_path} network {entry['name']!r}")
        networks.append(network)
    data_config = apply_data_overrides(name, DataConfig(**_tuples(metadata["data_config"])), input_size,
                                       data_overrides)
    return SourceCheckpointBackbone(name, networks, data_config, f"sha256:{digest}", metadata["feature_norm"],
                                    _source_head(metadata), metadata)


def _tuples(raw: Mapping[str, Any]) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _source_head(metadata: dict) -> tuple[int, str] | None:
    """The first head trained on the source task's own classes (what LEEP/NCE read as source logits)."""
    kinds = {ls["name"]: ls["kind"] for ls in metadata["label_sets"]}
    for index, entry in enumerate(metadata["networks"]):
        for head in entry["spec"]["heads"]:
            if kinds.get(head) == "original":
                return index, head
    return None


def resolve_checkpoint_name(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback: `unirep:<path>`, or a path to a folder holding a unirep checkpoint."""
    if name.startswith(PREFIX) or (checkpoint_dir(name) / METADATA_FILE).is_file():
        return create_source_checkpoint
    return None


BACKBONES.add_fallback(resolve_checkpoint_name)
