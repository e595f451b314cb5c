"""WiSE-FT (Wortsman et al., CVPR 2022): weight-space ensembles of a pretrained and a fine-tuned network,
θ_α = (1 − α)·θ_0 + α·θ_1, for α in [0, 1] (the paper's grid here: 0, 0.25, 0.5, 0.75, 1).

θ_0 is the pretrained backbone with the *linear-probe head* (unirep's linear probe on the frozen features), θ_1 the
fine-tuned backbone with its own head; the head is interpolated with the backbone. That is the paper's choice for its
end-to-end variant, where θ_0's head is the zero-shot (text) head the fine-tuning started from; a frozen ImageNet
backbone has no zero-shot head, and the linear probe is the frozen network's classifier in every unirep table.

Every floating-point entry of the state dict is interpolated, BatchNorm's running means and variances included (the
networks are evaluated in eval mode, so those statistics are part of the function the weights compute). Integer
entries (BatchNorm's `num_batches_tracked` counters, which no eval-mode output reads) are taken from the nearer
endpoint: θ_0 below α = 0.5, θ_1 from 0.5 on. At α = 0 and α = 1 the result is the endpoint's state exactly.

Interpolated BatchNorm statistics are not the statistics of the interpolated network's own activations (their
variance shrinks between two networks: Jordan et al., REPAIR, ICLR 2023), which can cost much accuracy in the middle
of the path; `recompute_batchnorm` resets them to the interpolated network's statistics on ID training images (the
"reset BN" remedy), for networks strictly between the endpoints (the endpoints keep their own statistics).

The interpolated network is a backbone like any other: its name is `<fine-tuned run>@wise<α>` and its weights id the
digest of its state, so its features are cached and its records filed under that name.

Example:
    >>> net = wise_classifier(pretrained_with_probe_head, finetuned, alpha=0.5, label="mnv2@full-seed0@wise0.5")
    >>> net.backbone.name, net.backbone.weights_id[:24]
    ('mnv2@full-seed0@wise0.5', 'wise:alpha=0.5:sha256:6f')
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence

import torch

from unirep.errors import ConfigError, WeightsError
from unirep.finetune.module import Classifier

WISE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def checked_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    """The mixing coefficients, each in [0, 1], refused in one line otherwise."""
    values = tuple(float(a) for a in alphas)
    if not values:
        raise ConfigError("wise_alphas is empty: give mixing coefficients in [0, 1], e.g. [0, 0.25, 0.5, 0.75, 1]")
    outside = [a for a in values if not 0.0 <= a <= 1.0]
    if outside:
        raise ConfigError(f"wise_alphas {outside} outside [0, 1]: WiSE-FT mixes (1 - alpha) pretrained + alpha "
                          "fine-tuned weights; use values from 0 (pretrained) to 1 (fine-tuned)")
    return values


def interpolate_states(theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor],
                       alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·θ_0 + α·θ_1 entry by entry (floating-point entries; integer ones from the nearer endpoint)."""
    (alpha,) = checked_alphas([alpha])
    if set(theta_0) != set(theta_1):
        differ = sorted(set(theta_0) ^ set(theta_1))
        raise WeightsError(f"WiSE-FT needs two states of one architecture; keys differ: {differ[:5]}")
    mixed = {}
    for key, a in theta_0.items():
        b = theta_1[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise WeightsError(f"WiSE-FT: entry {key!r} is {tuple(a.shape)} {a.dtype} in the pretrained state and "
                               f"{tuple(b.shape)} {b.dtype} in the fine-tuned one")
        if alpha in (0.0, 1.0) or not a.is_floating_point():
            mixed[key] = (a if alpha < 0.5 else b).detach().clone()
        else:
            mixed[key] = (1.0 - alpha) * a.detach() + alpha * b.detach()
    return mixed


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every entry's name, dtype, shape and bytes, in key order: the weights id of a network that exists
    only in memory (a fine-tuned or interpolated one)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # 1-d: 0-d tensors cannot be viewed
    return f"sha256:{digest.hexdigest()}"


def wise_label(run_label: str, alpha: float) -> str:
    """`<fine-tuned run>@wise<α>`, e.g. `mobilenetv2_100.packaged_in1k@full-seed0@wise0.25`."""
    return f"{run_label}@wise{float(alpha):g}"


def wise_classifier(pretrained: Classifier, finetuned: Classifier, alpha: float, label: str) -> Classifier:
    """The network θ_α (backbone and head) as a new Classifier named `label`; neither endpoint is changed.

    `pretrained` is the pretrained backbone with the linear-probe head, `finetuned` the fine-tuned network.
    """
    state = interpolate_states(pretrained.state_dict(), finetuned.state_dict(), alpha)
    net = copy.deepcopy(finetuned)
    net.load_state_dict(state)
    rename_network(net, label, f"wise:alpha={float(alpha):g}:{state_digest(state)}")
    return net.eval()


@torch.no_grad()
def recompute_batchnorm(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 128) -> int:
    """Replace every BatchNorm layer's running mean and variance by their values on `images` (uint8 (N, 3, H, W),
    the eval transform's geometry) through `net` itself: a cumulative average over the batches (momentum None), the
    batch variance unbiased as in training. Returns the number of BatchNorm layers; `net` is left in eval mode."""
    layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    net.eval()
    for layer in layers:
        layer.train()  # only the BatchNorm layers: dropout and the rest stay in eval mode
    normalize = net.backbone.data_config.normalize_batch
    for start in range(0, len(images), batch_size):
        net(normalize(images[start:start + batch_size]))
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
    net.eval()
    return len(layers)


def rename_network(net: Classifier, name: str, weights_id: str) -> None:
    """File `net`'s backbone under `name` with `weights_id`: the feature cache and the records key on both."""
    net.backbone.name = name
    net.backbone.weights_id = weights_id


__all__ = ["WISE_ALPHAS", "checked_alphas", "interpolate_states", "recompute_batchnorm", "rename_network",
           "state_digest", "wise_classifier", "wise_label"]
