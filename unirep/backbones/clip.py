"""CLIP image towers as backbones, with their text tower alongside (zero-shot heads, MCM): `clip:<open_clip model>`.

Names: `clip:ViT-B-32` (any open_clip model config), `clip:ViT-B-32-quickgelu.openai` (a pretrained tag: its
preprocessing and activation; `pretrained=True` fetches its safetensors release from the Hugging Face hub), or
`clip:path/to/config.json` (an open_clip model config file, registered with open_clip on first use). Weights come
from `weights=FILE` (a local `.safetensors`, or a torch file of plain tensors; both towers, open_clip's layout), the
hub (`pretrained=True`), or `random:clip:<model>` (seeded random init, named as such). OpenAI's original `.pt` files
are TorchScript archives, which only load by running their pickled code: they are refused, with the command that
fetches the safetensors release instead. open_clip is imported on first use (the `[clip]` extra).

Features (`layer`):
- none: the image embedding, exactly open_clip's `encode_image` (unnormalised; zero-shot and MCM normalise it).
- `unit-embedding`: the image embedding L2-normalised, what WiSE-FT's zero-shot head reads: a linear head with weight
  logit_scale * (unit class embeddings) and no bias gives CLIP's zero-shot logits on it (any image tower).
- `pre-projection`: the pooled token before the projection (after `ln_post`).
- `block<i>`: the class token after transformer block i (0-based), width-dimensional.
- `tokens`: the image embedding followed by the N local patch embeddings, flattened to (1 + N) * E: what GL-MCM
  reads. The local embeddings are Miyai et al.'s (GL-MCM, 2023, after MaskCLIP, Zhou et al. 2022): the last block
  applied to each patch token with its attention restricted to that token (the value path), then `ln_post` and the
  projection, so every patch lands in the space the text embeddings live in.
- `patch-mean`: the mean of those N local embeddings (E-dimensional).
The other layers need open_clip's ViT tower (`VisionTransformer` with standard blocks).

The text tower is not a submodule of the backbone: fine-tuning, WiSE-FT and the parameter count concern the image
tower, and copies of the backbone share one frozen text tower (`backbone.text_tower`, unirep.zero_shot uses it).
Nothing here waits on the hub: model configs and local files are read with the hub's offline switch on, and a
download first checks the local hub cache and whether the hub answers at all (3 s), so an offline run fails at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unirep.backbones import BACKBONES
from unirep.backbones.base import INTERPOLATIONS, Backbone, DataConfig
from unirep.backbones.weights import load_strict, read_state_dict, strip_prefix
from unirep.errors import ConfigError, WeightsError
from unirep.fileio import sha256_file
from unirep.runtime_env import switches

CLIP_PREFIX = "clip:"
RANDOM_CLIP_PREFIX = "random:clip:"
BLOCK_LAYER = re.compile(r"^block(?P<index>\d+)$")
NAMED_LAYERS = ("unit-embedding", "pre-projection", "tokens", "patch-mean")
HUB_TIMEOUT_S = 3.0
# Where the safetensors release of OpenAI's weights lives (timm's hub repos hold open_clip's file too).
OPENAI_SAFETENSORS_HINT = ("hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors (ViT-B-32; "
                           "other models: timm/<timm name>.openai), then pass weights=<that file>")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ConfigError("CLIP backbones need open-clip-torch: pip install 'unirep[clip]'") from None
    return open_clip


def hub_offline() -> contextlib.AbstractContextManager[None]:
    """The Hugging Face hub's offline switch, on for the block: building a model config or a tokenizer never looks
    anything up (without it, an unreachable hub costs ~25 s of retries per file); the one scoped writer of the
    environment sets the hub's import-time constant too."""
    return switches(hub_offline=True)


@dataclass(frozen=True)
class ClipName:
    """`clip:<arch>[.<tag>]` or `clip:<config.json>`, parsed."""

    name: str
    arch: str
    tag: str | None
    config_file: Path | None

    @classmethod
    def parse(cls, name: str) -> ClipName:
        inner = name.removeprefix("random:").removeprefix(CLIP_PREFIX)
        if inner.endswith(".json"):
            path = Path(inner).expanduser()
            if not path.is_file():
                raise ConfigError(f"backbone {name!r}: open_clip config file {inner!r} not found")
            return cls(name, path.stem, None, path)
        arch, _, tag = inner.partition(".")  # open_clip's model names hold no dots; timm-style `.tag` follows them
        return cls(name, arch, tag or None, None)

    def register(self) -> None:
        """Make the architecture known to open_clip (a config file is registered under its stem)."""
        open_clip = _open_clip()
        if self.config_file is not None and self.arch not in open_clip.list_models():
            _check_config_file(self.name, self.config_file)
            open_clip.add_model_config(self.config_file)
        if self.arch not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(self.arch, open_clip.list_models(), n=4, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"backbone {self.name!r}: open_clip has no model {self.arch!r}: {hint}(see "
                              "open_clip.list_models(), or give a model config .json)")

    def pretrained_cfg(self) -> dict:
        if self.tag is None:
            return {}
        open_clip = _open_clip()
        cfg = open_clip.get_pretrained_cfg(self.arch, self.tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise ConfigError(f"backbone {self.name!r}: open_clip model {self.arch!r} has no pretrained tag "
                              f"{self.tag!r}; its tags: {', '.join(tags) or 'none'}")
        return dict(cfg)


def _check_config_file(name: str, path: Path) -> None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"backbone {name!r}: {path} is not a readable JSON model config ({exc})") from None
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise ConfigError(f"backbone {name!r}: {path} is not an open_clip model config (needs embed_dim, vision_cfg, "
                          "text_cfg)")


class TextTower:
    """CLIP's text encoder (open_clip's model without its image tower) and tokenizer, frozen.

    Not an nn.Module of the backbone on purpose: a copy of the backbone (fine-tuning copies it) shares this tower,
    which nothing trains, and the backbone's parameters are the image tower's.
    """

    def __init__(self, model: nn.Module, architecture: str, weights_id: str):
        self.model = model.eval().requires_grad_(False)
        self.architecture = architecture
        self.weights_id = weights_id
        self._tokenizer: Callable | None = None

    @property
    def tokenizer(self) -> Callable:
        # Made on first use: reading the BPE vocabulary is most of a small backbone's build time.
        if self._tokenizer is None:
            with hub_offline():
                self._tokenizer = _open_clip().get_tokenizer(self.architecture)
        return self._tokenizer

    def __deepcopy__(self, memo: dict) -> TextTower:
        return self

    @property
    def logit_scale(self) -> float:
        """CLIP's learned inverse temperature exp(t) (100 for OpenAI's weights)."""
        return float(self.model.logit_scale.detach().exp().reshape(-1)[0])

    def identity(self) -> dict:
        """What the text embeddings depend on besides the prompts (part of their cache key)."""
        return {"architecture": self.architecture, "weights_id": self.weights_id,
                "context_length": int(getattr(self.model, "context_length", 0) or 0)}

    def encode(self, prompts: Sequence[str], batch_size: int = 256, device: str | None = None) -> np.ndarray:
        """Unnormalised text embeddings (P, E), float32, of `prompts` (open_clip's `encode_text`), on `device`
        (default: the GPU when there is one: ViT-B-32's text tower took 57 s for 70 prompts on two busy CPU cores)."""
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(target)  # the text tower alone: the image tower is not in this model
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                tokens = self.tokenizer(list(prompts[start:start + batch_size])).to(target)
                outputs.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float32)


class ClipBackbone(Backbone):
    """A CLIP image tower (open_clip) as a frozen feature extractor; `visual` is the tower (fine-tuning trains it),
    `text_tower` its text encoder. See the module docstring for the layers."""

    def __init__(self, name: str, visual: nn.Module, text_tower: TextTower, data_config: DataConfig, weights_id: str,
                 layer: str | None, *, architecture: str, quick_gelu: bool):
        super().__init__(name, data_config, weights_id, layer)
        self.visual = visual.eval()
        self.text_tower = text_tower
        self.architecture = architecture
        self.quick_gelu = quick_gelu
        self.embed_dim = int(visual.output_dim)
        self._block = None
        if layer is not None:
            self._block = _check_layer(name, layer, visual)
        self.num_patches = _num_patches(visual)
        self.num_features = self._feature_dim()

    def _feature_dim(self) -> int:
        if self.layer in (None, "unit-embedding", "patch-mean"):
            return self.embed_dim
        if self.layer == "tokens":
            return (1 + self.num_patches) * self.embed_dim
        return int(self.visual.transformer.width)  # block<i>, pre-projection

    @property
    def feature_layers(self) -> list[str]:
        if not _is_standard_vit(self.visual):
            return ["unit-embedding"]
        return [f"block{i}" for i in range(len(self.visual.transformer.resblocks))] + list(NAMED_LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return self.visual(x)
        if self.layer == "unit-embedding":
            return F.normalize(self.visual(x), dim=-1)
        if self._block is not None:
            return self._run_blocks(x, self._block)[:, 0]
        if self.layer == "pre-projection":
            return self.visual._pool(self._run_blocks(x, None))[0]
        global_embedding, local = self.forward_local_tokens(x)
        if self.layer == "patch-mean":
            return local.mean(dim=1)
        return torch.cat([global_embedding[:, None], local], dim=1).flatten(1)

    def forward_local_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image embedding (B, E) and the local patch embeddings (B, N, E) of one pass (GL-MCM's inputs)."""
        _check_standard_vit(self.name, self.visual)
        blocks = self.visual.transformer.resblocks
        before_last = self._run_blocks(x, len(blocks) - 2) if len(blocks) > 1 else self.visual._embeds(x)
        pooled, _ = self.visual._pool(blocks[-1](before_last))
        local = self.visual.ln_post(_value_path(blocks[-1], before_last)[:, 1:])
        return pooled @ self.visual.proj, local @ self.visual.proj

    def _run_blocks(self, x: torch.Tensor, last: int | None) -> torch.Tensor:
        """Tokens (B, 1 + N, width) after block `last` (all blocks when None); later blocks are not computed."""
        tokens = self.visual._embeds(x)
        blocks = self.visual.transformer.resblocks
        for block in blocks if last is None else blocks[:last + 1]:
            tokens = block(tokens)
        return tokens

    def identity(self) -> dict:
        return {**super().identity(), "architecture": f"open_clip:{self.architecture}", "quick_gelu": self.quick_gelu}


def _value_path(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`block` applied to every token with attention to itself only: softmax over one key is 1, so the attention
    output is the token's own value, projected (MaskCLIP's / GL-MCM's local features)."""
    attention = block.attn
    width = tokens.shape[-1]
    value = F.linear(block.ln_1(tokens), attention.in_proj_weight[2 * width:], attention.in_proj_bias[2 * width:])
    hidden = tokens + block.ls_1(attention.out_proj(value))
    return hidden + block.ls_2(block.mlp(block.ln_2(hidden)))


def _is_standard_vit(visual: nn.Module) -> bool:
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    return (isinstance(visual, VisionTransformer) and visual.attn_pool is None and visual.pool_type == "tok"
            and not visual.final_ln_after_pool and getattr(visual.transformer, "batch_first", True)
            and all(isinstance(b, ResidualAttentionBlock) and b.attn.in_proj_weight is not None
                    for b in visual.transformer.resblocks))


def _check_standard_vit(name: str, visual: nn.Module) -> None:
    if not _is_standard_vit(visual):
        raise ConfigError(f"backbone {name!r}: its image tower ({type(visual).__name__}) is not open_clip's standard "
                          "ViT, so only the image embedding (no layer) is available")


def _check_layer(name: str, layer: str, visual: nn.Module) -> int | None:
    if layer == "unit-embedding":
        return None
    _check_standard_vit(name, visual)
    depth = len(visual.transformer.resblocks)
    match = BLOCK_LAYER.match(layer)
    if match and int(match["index"]) < depth:
        return int(match["index"])
    if layer in NAMED_LAYERS:
        return None
    raise ConfigError(f"backbone {name!r} has no layer {layer!r}: valid layers are block0..block{depth - 1}, "
                      f"{', '.join(NAMED_LAYERS)}, or none for the image embedding")


def _num_patches(visual: nn.Module) -> int:
    grid = getattr(visual, "grid_size", None)
    return int(grid[0] * grid[1]) if grid else 0


# ------------------------------------------------------------------------------------------------ building
def create_clip_backbone(name: str, *, pretrained: bool = False, weights: str | Path | None = None,
                         layer: str | None = None, input_size: int | None = None,
                         data_overrides: Mapping[str, Any] | None = None, seed: int = 0) -> ClipBackbone:
    """Factory for `clip:<model>` (weights from `weights=FILE` or the hub) and `random:clip:<model>` (random init).

    Example:
        >>> backbone = create_backbone("clip:ViT-B-32-quickgelu.openai", weights="open_clip_model.safetensors")
        >>> backbone.num_features, backbone.text_tower.logit_scale
        (512, 100.0)
    """
    check_clip_request(name, pretrained=pretrained, weights=weights)
    parsed = ClipName.parse(name)
    tag_cfg = parsed.pretrained_cfg()
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    path = None
    if not name.startswith("random:"):
        # Found (or fetched) before the model is built: a missing file or an offline hub fails in a second.
        path = Path(weights).expanduser() if weights is not None else download_tag_weights(parsed, tag_cfg)
        refuse_torchscript(path)
    open_clip = _open_clip()
    with hub_offline(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _create_model(open_clip, parsed, quick_gelu, input_size)
    weights_id = f"random:seed={seed}" if path is None else load_clip_weights(model, path)
    data_config = _data_config(name, model, tag_cfg, input_size, data_overrides)
    visual = model.visual
    model.visual = nn.Identity()  # the text tower keeps everything else (open_clip's encode_text needs no image tower)
    text = TextTower(model, parsed.arch, weights_id)
    return ClipBackbone(name, visual, text, data_config, weights_id, layer, architecture=parsed.arch,
                        quick_gelu=quick_gelu)


def _create_model(open_clip, parsed: ClipName, quick_gelu: bool, input_size: int | None) -> nn.Module:
    previous = logging.root.manager.disable
    # open_clip warns "initialized randomly" on the root logger; the weights are loaded right after.
    logging.disable(logging.WARNING)
    try:
        # pretrained_text=False: an HF text tower is filled from the weights file, never fetched.
        return open_clip.create_model(parsed.arch, pretrained=None, force_quick_gelu=quick_gelu,
                                      force_image_size=input_size, pretrained_text=False)
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
        raise ConfigError(f"backbone {parsed.name!r}: open_clip could not build {parsed.arch!r} "
                          f"({_first_line(exc)})") from None
    finally:
        logging.disable(previous)


def check_clip_request(name: str, *, pretrained: bool = False, weights: str | Path | None = None, **_: Any) -> None:
    """Exactly one source of weights for `clip:` names (the hub needs a pretrained tag); none for `random:clip:`."""
    if name.startswith("random:"):
        if pretrained or weights is not None:
            raise ConfigError(f"backbone {name!r} has random weights by definition: drop pretrained/weights, or name "
                              f"{name.removeprefix('random:')!r}")
        ClipName.parse(name).register()
        return
    if pretrained and weights is not None:
        raise ConfigError(f"backbone {name!r}: give either pretrained=True (the hub) or weights=FILE, not both")
    if not pretrained and weights is None:
        raise ConfigError(f"backbone {name!r} names an architecture, not weights: give weights=FILE (a local "
                          f".safetensors of both towers, e.g. {OPENAI_SAFETENSORS_HINT.split(', then')[0]}), "
                          f"pretrained=True with a tag (clip:ViT-B-32-quickgelu.openai), or name it "
                          f"'random:{name}' for random init")
    parsed = ClipName.parse(name)
    if pretrained and parsed.tag is None:
        raise ConfigError(f"backbone {name!r}: pretrained=True needs a pretrained tag in the name, e.g. "
                          "clip:ViT-B-32-quickgelu.openai (open_clip.list_pretrained_tags_by_model lists them)")
    # The architecture, the tag and the file are checked here, so a run refuses them before any backbone's work.
    parsed.register()
    parsed.pretrained_cfg()
    if weights is not None and not Path(weights).expanduser().is_file():
        raise WeightsError(f"weights file {str(weights)!r} not found: give the path to a local .safetensors of both "
                           "CLIP towers")


create_clip_backbone.check_request = check_clip_request  # type: ignore[attr-defined]  # see create_backbone


def _data_config(name: str, model: nn.Module, tag_cfg: dict, input_size: int | None,
                 data_overrides: Mapping[str, Any] | None) -> DataConfig:
    from unirep.backbones.timm_backbone import apply_data_overrides

    preprocess = {**getattr(model.visual, "preprocess_cfg", {}), **{k: tag_cfg[k] for k in ("mean", "std",
                                                                                             "interpolation")
                                                                   if k in tag_cfg}}
    size = preprocess.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, list | tuple) else size
    interpolation = preprocess.get("interpolation", "bicubic")
    # open_clip's eval transform: shorter side to the input size, centre crop (crop_pct 1).
    base = DataConfig(input_size=int(size), mean=tuple(float(v) for v in preprocess["mean"]),
                      std=tuple(float(v) for v in preprocess["std"]),
                      interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic", crop_pct=1.0)
    return apply_data_overrides(name, base, input_size, data_overrides)


# ------------------------------------------------------------------------------------------------ weights
def load_clip_weights(model: nn.Module, path: str | Path) -> str:
    """Load a local file of both towers into the open_clip `model`, strictly; returns its weights_id."""
    path = Path(path)
    refuse_torchscript(path)
    state = strip_prefix(read_state_dict(path), model.state_dict())
    state = _open_clip_layout(model, state)
    where = f"weights file {str(path)!r}"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing and all(not k.startswith("visual.") for k in missing) and any(k.startswith("visual.") for k in state):
        raise WeightsError(f"{where} holds an image tower only ({len(missing)} text-tower tensors missing, e.g. "
                           f"{missing[0]}): a CLIP backbone needs both towers, e.g. open_clip's "
                           "open_clip_model.safetensors (a timm model.safetensors loads as the plain timm name)")
    load_strict(model, state, where=where)
    return f"sha256:{sha256_file(path)}"


def refuse_torchscript(path: Path) -> None:
    """OpenAI's original CLIP releases are TorchScript archives: reading one runs its pickled code. Refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip archive: the safe readers judge it
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        raise WeightsError(f"weights file {str(path)!r} is a TorchScript archive (like OpenAI's original CLIP .pt "
                           f"files), which loads only by running its code: refused; get the safetensors release "
                           f"instead: {OPENAI_SAFETENSORS_HINT}")


def _open_clip_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The layout fixes open_clip's own loader applies (third-party layouts, old text layout, scalar logit scale,
    position embeddings resampled to the model's image size)."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    state = dict(convert_state_dict(model, state))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and model.logit_scale.ndim != state["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    if "visual.positional_embedding" in state and hasattr(model.visual, "positional_embedding"):
        if state["visual.positional_embedding"].shape[-1] == model.visual.positional_embedding.shape[-1]:
            resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def download_tag_weights(parsed: ClipName, tag_cfg: dict) -> Path:
    """The safetensors release of a pretrained tag: from the local hub cache, else fetched (networked users)."""
    from huggingface_hub import hf_hub_download
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        raise WeightsError(f"backbone {parsed.name!r}: tag {parsed.tag!r} has no hub release, only a URL (OpenAI's "
                           f"TorchScript .pt or a pickle): convert it to safetensors yourself and pass weights=FILE")
    repo, filename = os.path.split(hub)  # "org/repo/" names the repo only: open_clip's default file
    candidates = [HF_SAFE_WEIGHTS_NAME] if not filename else (
        [filename.rsplit(".", 1)[0] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename])
    for candidate in candidates:
        with contextlib.suppress(Exception):
            return Path(hf_hub_download(repo, candidate, local_files_only=True))
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE or not hub_reachable(hub_constants.ENDPOINT):
        raise WeightsError(f"backbone {parsed.name!r}: {repo}/{candidates[0]} is not in the local hub cache and the "
                           f"hub is unreachable (offline): on a networked machine run `hf download {repo} "
                           f"{candidates[0]}` and pass the file as weights=FILE")
    last = None
    for candidate in candidates:
        try:
            return Path(hf_hub_download(repo, candidate))
        except Exception as exc:  # noqa: BLE001 - missing file: try the next candidate; the last error is reported
            last = exc
    raise WeightsError(f"backbone {parsed.name!r}: could not fetch {repo}/{candidates[0]} ({_first_line(last)}): "
                       "download it yourself and pass weights=FILE")


def hub_reachable(endpoint: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the hub's host accepts a connection within `timeout` seconds (no DNS, no route: False at once)."""
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip().splitlines() if exc is not None else []
    return text[0] if text else type(exc).__name__


def resolve_clip_name(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback: `clip:<model>` and `random:clip:<model>`."""
    return create_clip_backbone if name.startswith((CLIP_PREFIX, RANDOM_CLIP_PREFIX)) else None


BACKBONES.add_fallback(resolve_clip_name)
