"""Local weights files: safe readers, common wrappers, strict loads with errors that name the keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from unirep.backbones import create_backbone
from unirep.backbones.weights import map_by_position, read_state_dict, strip_prefix
from unirep.errors import WeightsError

ARCH = "mobilenetv3_small_050"


def _touch(path: str) -> None:  # what a malicious pickle would run on load
    Path(path).write_text("pwned")


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _touch, (str(self.marker),)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(7)
    return timm.create_model(ARCH).eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["safetensors", "pth-plain", "pth-lightning", "pth-ddp-model"])
def test_local_file_loads_exactly(tmp_path, trained, fmt):
    state = _state(trained)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pth"
        wrapped = {
            "pth-plain": state,
            "pth-lightning": {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}},
            "pth-ddp-model": {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"lr": 0.1}},
        }[fmt]
        torch.save(wrapped, path)
    backbone = create_backbone(ARCH, weights=str(path), input_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(backbone.forward_source_logits(x), trained(x))
        assert torch.equal(backbone(x), trained.forward_head(trained.forward_features(x), pre_logits=True))
    assert backbone.weights_id == _sha(path)
    assert backbone.has_source_head


def test_file_for_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(_state(timm.create_model("resnet10t")), str(path))
    with pytest.raises(WeightsError) as info:
        create_backbone("mobilenetv2_100", weights=path)
    message = str(info.value)
    assert "resnet.safetensors" in message and "\n" not in message
    # resnet10t has 86 tensors; bn1.* (5) exist in both networks, 4 of them with other shapes.
    assert "missing: conv_stem.weight, blocks.0.0.conv_dw.weight," in message and "(309 in all)" in message
    assert "unexpected: conv1.0.weight, conv1.1.bias," in message and "(81 in all)" in message
    assert "shape mismatch (file vs model): bn1.weight (64,) vs (32,), bn1.bias" in message and "(4)" in message


def test_classifier_only_mismatch_suggests_num_classes(tmp_path):
    path = tmp_path / "ten.safetensors"
    save_file(_state(timm.create_model("test_resnet", num_classes=10)), str(path))
    with pytest.raises(WeightsError, match=r"only the classifier differs: pass num_classes=10"):
        create_backbone("test_resnet", weights=path)
    backbone = create_backbone("test_resnet", weights=path, num_classes=10, input_size=32)
    assert backbone.forward_source_logits(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_pickle_with_code_is_refused_and_never_runs(tmp_path, trained):
    path, marker = tmp_path / "evil.pth", tmp_path / "marker"
    torch.save({"state_dict": _state(trained), "extra": Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"was refused: it holds test_backbone_weights\._touch.*weights_only=True"):
        create_backbone(ARCH, weights=path)
    assert not marker.exists()


@pytest.mark.parametrize(("content", "name", "pattern"), [
    (None, "absent.pth", "not found"),
    (b"not a weights file", "w.safetensors", "not a readable safetensors"),
    (b"not a weights file", "w.pth", "not a readable torch file"),
    (b"", "w.onnx", "unknown suffix '.onnx'"),
    ({"epoch": 3, "lr": 0.1}, "w.pt", "no state dict of tensors"),
])
def test_unreadable_files(tmp_path, content, name, pattern):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=pattern):
        read_state_dict(path)


def test_strip_prefix_only_when_it_helps():
    expected = {"a.weight": 0, "b.bias": 0}
    assert list(strip_prefix({"module.a.weight": 1, "module.b.bias": 2}, expected)) == ["a.weight", "b.bias"]
    # "model." here is the network's own first module, not a wrapper prefix: stripping would break the match.
    own = {"model.a.weight": 1}
    assert strip_prefix(own, {"model.a.weight": 0}) is own


def test_map_by_position_checks_count_shape_and_role():
    target = {"conv.weight": torch.zeros(4, 3), "bn.weight": torch.zeros(4), "bn.bias": torch.zeros(4)}
    source = {"c.weight": torch.ones(4, 3), "n.weight": torch.ones(4), "n.bias": torch.ones(4)}
    assert map_by_position(source, target, where="t") == {"conv.weight": "c.weight", "bn.weight": "n.weight",
                                                           "bn.bias": "n.bias"}
    swapped = {"c.weight": torch.ones(4, 3), "n.bias": torch.ones(4), "n.weight": torch.ones(4)}
    with pytest.raises(WeightsError, match=r"tensor #1 n\.bias \(4,\) does not match model bn\.weight"):
        map_by_position(swapped, target, where="t")
    with pytest.raises(WeightsError, match=r"tensor #0 c\.weight \(3, 4\)"):
        map_by_position({**source, "c.weight": torch.ones(3, 4)}, target, where="t")
    with pytest.raises(WeightsError, match="2 tensors in the file vs 3"):
        map_by_position(dict(list(source.items())[:2]), target, where="t")
