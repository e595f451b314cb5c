"""LP-FT's linear-probing phase with unirep's own linear probe (Kumar et al. 2022 fit the head to convergence
with logistic regression before fine-tuning; a few SGD epochs on the head underfit, see the README).

The probe (L-BFGS multinomial logistic regression on standardised features, unirep.probes.linear) runs on the
frozen network's features of the un-augmented images. Its C is chosen on val over the probe's default grid
(Kornblith et al.'s 10^linspace(-6, 5, 45)); the head is then fitted with that C on the training images only, so
the fine-tuning phase that follows is still selected on a val split it has never fitted. The standardisation is
folded into the head: W (x - mean) / scale' + b == (W / scale') x + (b - (W / scale') . mean), with
scale' = max(scale, SCALE_FLOOR x the median scale of the non-constant columns).

Why the floor: a network's pooled features include near-dead units, non-zero on a handful of training images
(MobileNetV2 at 32 px on opencv-digits: 98 % zeros in the median column, spreads down to 4e-6). Standardising blows
those up to unit variance and the probe gives them ordinary weights, so the exact fold multiplies them by up to
1/scale ~ 1e5 (val logits of +-1,000, |W| up to 15,000). Harmless on the frozen features it was fitted on; but any
change of the backbone (a fine-tuning step, a WiSE-FT interpolation) moves those units, and the logits explode. With
the floor, columns with less than a tenth of the median spread get proportionally smaller weights (there: val
top-1 of the folded head 82.2 -> 83.0 %, logits within +-20, |W| <= 45).
The floor is not enough on its own: the head's gain (|W| ~ 25 x the probe's coefficients, the features' spread
being ~0.04) still scales every backbone gradient, so LP-FT's fine-tuning needs a small learning rate. Measured there
(SGD, frozen BatchNorm statistics): fine-tuning at 1e-3 and 1e-4 diverged (train loss 648 and 220 in the first
epoch, val 10 %), at 1e-5 it trained (val 77.8 -> 81.6 % over 4 epochs) and WiSE-FT between the pretrained network
with this head and that endpoint stayed at 82.2 / 82.6 / 81.8 % for alpha = 0.25 / 0.5 / 0.75. Choose the rate on
val (`finetune.lrs` x `lpft_lr_factor`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from unirep.features import ExtractionSettings, extract_features
from unirep.finetune.module import Classifier
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, create_probe
from unirep.tasks.base import ImageSet

# A class the probe never saw in training gets this much less than the lowest bias: like the probe, never predicted.
ABSENT_CLASS_MARGIN = 10.0
# The folded head's smallest standardisation scale, as a share of the median non-constant column's (module docstring).
SCALE_FLOOR = 0.1


def frozen_features(net: Classifier, images: ImageSet, device: str) -> FeatureSplit:
    """Features of `net`'s backbone (eval mode, fp32, eval transform) and the labels; `net` is left as it was."""
    settings = ExtractionSettings(batch_size=256, device=device)
    # A copy, because extract_features puts the module it is given in eval mode, on its device and in channels_last:
    # LP-FT fits this head on the very net it then fine-tunes, which must stay as the caller set it.
    extracted = extract_features(copy.deepcopy(net.backbone), images, settings, description="linear-probe features")
    return FeatureSplit(extracted.features, extracted.labels)


def linear_probe_head(net: Classifier, fit_images: ImageSet, val: ImageSet | None, metric: Metric,
                      C: float | None, device: str = "cpu") -> tuple[float, float | None]:
    """Set `net.head` to the linear probe fitted on `fit_images`; with `C` None, choose C on `val` first.

    Returns the C used and the probe's best val score (None when C was given).

    Example:
        >>> C, val_score = linear_probe_head(net, task.split("train"), task.split("val"), Metric.TOP1, C=None)
    """
    train = frozen_features(net, fit_images, device)
    val_score = None
    if C is None:
        selector = create_probe("linear").select(train, frozen_features(net, val, device), metric)
        C, val_score = float(selector.selected_params_["C"]), float(selector.val_score_)
    probe = create_probe("linear", C=C).fit(train.X, train.y)
    load_head(net.head, probe.coef_, probe.intercept_, probe.mean_, probe.scale_, probe.classes_)
    return C, val_score


@torch.no_grad()
def load_head(head: torch.nn.Linear, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray,
              classes: np.ndarray) -> None:
    """Write a probe on standardised features into `head`, which reads raw features (scales floored: see the module
    docstring)."""
    weight = torch.as_tensor(coef / floored_scale(scale)[None, :], dtype=head.weight.dtype)
    bias = torch.as_tensor(intercept - weight.double().numpy() @ mean, dtype=head.bias.dtype)
    head.weight.zero_()
    head.bias.fill_(float(bias.min()) - ABSENT_CLASS_MARGIN)
    rows = torch.as_tensor(np.asarray(classes, dtype=np.int64))
    head.weight[rows] = weight
    head.bias[rows] = bias


def floored_scale(scale: np.ndarray) -> np.ndarray:
    """`scale` with every entry at least SCALE_FLOOR x the median of the entries the probe did not set to 1 (its
    constant columns, which carry no signal)."""
    scale = np.asarray(scale, dtype=np.float64)
    varying = scale[scale != 1.0]
    return np.maximum(scale, SCALE_FLOOR * float(np.median(varying))) if len(varying) else scale
