"""Reading weights files safely and loading them strictly, with errors that say exactly what does not fit.

Only two readers are used: safetensors, and `torch.load(weights_only=True)`, which refuses pickles that would
run arbitrary code. A file for another architecture never loads "mostly": every missing, unexpected or
reshaped tensor is a WeightsError naming the first few keys and the counts.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from unirep.errors import WeightsError

# Wrappers training scripts put around the state dict (Lightning, timm train.py, DeiT/MAE, torchvision refs).
STATE_DICT_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net", "network")
# Prefixes whole checkpoints carry: DistributedDataParallel ("module."), Lightning modules holding the
# network as `self.model` / `self.backbone` / `self.net`, torch.compile ("_orig_mod.").
STATE_DICT_PREFIXES = ("module.", "model.", "backbone.", "net.", "encoder.", "_orig_mod.")
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
SHOWN_KEYS = 5

StateDict = dict[str, torch.Tensor]


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from `.safetensors` or a torch file (weights_only), unwrapping common wrappers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} not found: give the path to an existing .safetensors/.pth file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        obj = _read_torch(path)
    else:
        raise WeightsError(
            f"weights file {str(path)!r} has an unknown suffix {suffix!r}: use one of "
            f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}"
        )
    return unwrap_state_dict(obj, where=str(path))


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"weights file {str(path)!r} is not a readable safetensors file ({_one_line(exc)})"
        ) from None


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "Unsupported global" in detail:
            # weights_only admits tensors and plain containers only: this pickle would import (and could run) code.
            found = re.search(r"GLOBAL (\S+)", detail)
            raise WeightsError(
                f"weights file {str(path)!r} was refused: it holds {found.group(1) if found else 'a Python object'}, "
                f"not only tensors (read with weights_only=True for safety): re-save it with "
                f"torch.save(model.state_dict(), path) or safetensors"
            ) from None
        raise WeightsError(f"weights file {str(path)!r} is not a readable torch file ({detail})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(f"weights file {str(path)!r} is not a readable torch file ({_one_line(exc)})") from None


def _unpickler_detail(exc: BaseException) -> str:
    """The informative line of torch's multi-line weights_only error."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return _one_line(exc)
    rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
    return rest[0] if rest else "unsupported pickle content"


def unwrap_state_dict(obj: object, *, where: str) -> StateDict:
    """The tensor mapping inside `obj`: itself, or the first wrapper key holding one (see STATE_DICT_WRAPPERS)."""
    if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
        for key in STATE_DICT_WRAPPERS:
            if isinstance(obj.get(key), Mapping) and _is_tensor_mapping(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_mapping(obj):
        keys = list(obj)[:SHOWN_KEYS] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(
            f"{where}: no state dict of tensors found (top level: {keys}); expected a mapping name -> tensor, "
            f"possibly under one of {', '.join(STATE_DICT_WRAPPERS)}"
        )
    return dict(obj)


def _is_tensor_mapping(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefix(state_dict: StateDict, expected: Mapping[str, object]) -> StateDict:
    """Remove a prefix shared by every key (DDP, Lightning, compile) when that makes the keys fit `expected`."""
    best, best_overlap = state_dict, len(set(state_dict) & set(expected))
    for prefix in STATE_DICT_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            stripped = {k[len(prefix):]: v for k, v in state_dict.items()}
            overlap = len(set(stripped) & set(expected))
            if overlap > best_overlap:
                best, best_overlap = stripped, overlap
    return best


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Raise WeightsError unless `state_dict` has exactly the model's keys with the model's shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or reshaped):
        return
    parts = [
        _listing(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)",
                                                                               reshaped))
        if items
    ]
    hint = _classifier_hint(model, state_dict, missing + unexpected + [r.split(" ")[0] for r in reshaped])
    raise WeightsError(f"{where} does not fit {type(model).__name__} ({'; '.join(parts)}): {hint}")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, where: str) -> None:
    check_state_dict(model, state_dict, where=where)
    model.load_state_dict(state_dict, strict=True)


def _listing(label: str, keys: list[str]) -> str:
    # BatchNorm step counters say nothing about the architecture: show the telling keys first.
    keys = sorted(keys, key=lambda k: k.endswith("num_batches_tracked"))
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f", ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else f" ({len(keys)})"
    return f"{label}: {shown}{more}"


def _classifier_hint(model: nn.Module, state_dict: Mapping[str, torch.Tensor], bad_keys: list[str]) -> str:
    """When only the classifier differs, say which `num_classes` the file was saved with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if isinstance(classifier, str) and bad_keys and all(k.startswith(classifier + ".") for k in bad_keys):
        weight = state_dict.get(f"{classifier}.weight")
        num_classes = 0 if weight is None else int(weight.shape[0])
        return f"only the classifier differs: pass num_classes={num_classes} (model kwargs) to match the file"
    return "the file is for another architecture; give the matching backbone name or the right file"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def map_by_position(source: StateDict, target: Mapping[str, torch.Tensor], *, where: str) -> dict[str, str]:
    """Pair `target` keys with `source` keys in order, verified: same count, same shapes, same tensor role.

    Used for checkpoints whose key names come from another implementation of the same network (torchvision,
    efficientnet_pytorch) but whose tensors are stored in the same order. The role check (the key's last part:
    weight, bias, running_mean, running_var, num_batches_tracked) catches misalignments that shapes alone miss,
    e.g. a BatchNorm weight against a bias of the same length.

    Returns:
        target key -> source key, covering every tensor on both sides.
    """
    if len(source) != len(target):
        raise WeightsError(
            f"{where}: {len(source)} tensors in the file vs {len(target)} in the model: not the same network"
        )
    mapping: dict[str, str] = {}
    for (t_key, t_val), (s_key, s_val) in zip(target.items(), source.items()):
        if tuple(t_val.shape) != tuple(s_val.shape) or _role(t_key) != _role(s_key):
            raise WeightsError(
                f"{where}: tensor #{len(mapping)} {s_key} {tuple(s_val.shape)} does not match model "
                f"{t_key} {tuple(t_val.shape)}: the file is not this network"
            )
        mapping[t_key] = s_key
    return mapping


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]
