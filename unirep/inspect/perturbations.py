"""Input perturbations for the fragility section: common corruptions and small adversarial steps, on [0, 1] pixels.

Every perturbation is registered with its table of severities: severity 0 is the clean image (the function is not
even called), severities 1-5 follow ImageNet-C's parameters (Hendrycks & Dietterich 2019) where it has them, so
"severity 3" means the same thing on every backbone and in every report:

| name | parameter | severities 1..5 | how |
|---|---|---|---|
| gaussian-noise | σ (pixel units) | 0.08, 0.12, 0.18, 0.26, 0.38 | x + σ·N(0, 1), seeded, clamped to [0, 1] |
| gaussian-blur | σ in px at 224 px | 1, 2, 3, 4, 6 | v2 gaussian_blur, σ scaled to the input size, kernel 2·⌈3σ⌉+1 |
| jpeg | quality | 25, 18, 15, 10, 7 | torchvision encode_jpeg / decode_jpeg of the 8-bit image (severity 0: none) |
| contrast | factor | 0.4, 0.3, 0.2, 0.1, 0.05 | torchvision v2 adjust_contrast (blend with the grey mean) |
| brightness | factor | 1.25, 1.5, 1.75, 2.0, 2.5 | torchvision v2 adjust_brightness (scale, clamped) |
| fgsm | ε (L∞, pixel units) | 0.5, 1, 2, 4, 8 (/255) | captum FGSM, cross-entropy of the true label, clamped |
| pgd | ε (L∞, pixel units) | 0.5, 1, 2, 4, 8 (/255) | captum PGD, 10 steps of ε/4 (Madry: 2.5·ε/steps), from x |

The metrics of a perturbed set (`calibration_numbers`): accuracy, mean confidence (max softmax probability),
expected calibration error over 15 equal-width confidence bins ((m-1)/15, m/15] (Guo et al. 2017), and the share of
confident errors: images (of all images) classified wrongly with a max probability >= 0.9.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

from unirep.errors import ConfigError
from unirep.registry import Registry

SEVERITIES = (0, 1, 2, 3, 4, 5)
ECE_BINS = 15
CONFIDENT = 0.9
PGD_STEPS = 10


@dataclass(frozen=True)
class Perturbation:
    """One registered perturbation: `levels[s]` is its parameter at severity s (levels[0]: the identity).

    apply(images, value, model=..., labels=..., generator=...) -> perturbed images in [0, 1]; corruptions ignore
    model and labels, adversarial perturbations need them (they follow the loss gradient of `model`).
    """

    name: str
    parameter: str
    levels: tuple[float | None, ...]
    adversarial: bool
    apply: Callable[..., torch.Tensor]

    def table(self) -> dict:
        return {"parameter": self.parameter, "levels": list(self.levels), "adversarial": self.adversarial}


PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def register_perturbation(name: str, *, parameter: str, levels: Sequence[float | None], adversarial: bool = False):
    """Function decorator: register `fn(images, value, **context)` with its severity table (severity 0 first)."""
    if len(levels) != len(SEVERITIES):
        raise ValueError(f"perturbation {name!r}: {len(levels)} levels, expected one per severity {SEVERITIES}")

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        levels_ = tuple(None if v is None else float(v) for v in levels)
        PERTURBATIONS.add(name, Perturbation(name, parameter, levels_, adversarial, fn))
        return fn

    return decorator


@register_perturbation("gaussian-noise", parameter="sigma", levels=(0.0, 0.08, 0.12, 0.18, 0.26, 0.38))
def gaussian_noise(images: torch.Tensor, sigma: float, *, generator: torch.Generator, **_) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + sigma * noise).clamp_(0.0, 1.0)


@register_perturbation("gaussian-blur", parameter="sigma_px_at_224", levels=(0.0, 1.0, 2.0, 3.0, 4.0, 6.0))
def gaussian_blur(images: torch.Tensor, sigma_at_224: float, **_) -> torch.Tensor:
    # ImageNet-C's σ are pixels of a 224-px image; scaled so the blur covers the same share of a smaller image.
    sigma = sigma_at_224 * images.shape[-1] / 224.0
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


@register_perturbation("jpeg", parameter="quality", levels=(None, 25, 18, 15, 10, 7))
def jpeg(images: torch.Tensor, quality: float, **_) -> torch.Tensor:
    eight_bit = [image for image in (images * 255.0).round_().to(torch.uint8).cpu()]
    decoded = decode_jpeg(encode_jpeg(eight_bit, quality=int(quality)))
    return (torch.stack(decoded).float() / 255.0).to(images.device)


@register_perturbation("contrast", parameter="factor", levels=(1.0, 0.4, 0.3, 0.2, 0.1, 0.05))
def contrast(images: torch.Tensor, factor: float, **_) -> torch.Tensor:
    return TF.adjust_contrast(images, contrast_factor=factor)


@register_perturbation("brightness", parameter="factor", levels=(1.0, 1.25, 1.5, 1.75, 2.0, 2.5))
def brightness(images: torch.Tensor, factor: float, **_) -> torch.Tensor:
    return TF.adjust_brightness(images, brightness_factor=factor)


EPSILONS = (0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Per-image loss: captum differentiates each entry, so one image's step never depends on another's.
    return F.cross_entropy(logits, labels, reduction="none")


@contextlib.contextmanager
def _inputs_need_gradients():
    # captum warns on every step that it switched requires_grad on for the (detached) inputs: that is the intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        yield


@register_perturbation("fgsm", parameter="epsilon", levels=EPSILONS, adversarial=True)
def fgsm(images: torch.Tensor, epsilon: float, *, model: nn.Module, labels: torch.Tensor, **_) -> torch.Tensor:
    from captum.robust import FGSM

    attack = FGSM(model, loss_func=_cross_entropy, lower_bound=0.0, upper_bound=1.0)
    with _inputs_need_gradients():
        return attack.perturb(images, epsilon=epsilon, target=labels).detach()


@register_perturbation("pgd", parameter="epsilon", levels=EPSILONS, adversarial=True)
def pgd(images: torch.Tensor, epsilon: float, *, model: nn.Module, labels: torch.Tensor, **_) -> torch.Tensor:
    from captum.robust import PGD

    attack = PGD(model, loss_func=_cross_entropy, lower_bound=0.0, upper_bound=1.0)
    with _inputs_need_gradients():
        return attack.perturb(images, radius=epsilon, step_size=epsilon / 4, step_num=PGD_STEPS, target=labels,
                          random_start=False, norm="Linf").detach()


def check_perturbation_settings(names: Sequence[str] | None, severities: Sequence[int] | None) -> tuple[list, list]:
    """The perturbations and severities to run (None: all of them), refused in one line when outside the tables."""
    valid = PERTURBATIONS.list()
    names = list(valid if names is None else names)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown or not names:
        raise ConfigError(f"robustness.perturbations: unknown perturbation {', '.join(map(repr, unknown)) or '(none)'}"
                          f"; valid ones: {', '.join(valid)}")
    severities = list(SEVERITIES if severities is None else severities)
    outside = [s for s in severities
               if isinstance(s, bool) or not (isinstance(s, int | np.integer) and s in SEVERITIES)]
    if outside or not severities:
        raise ConfigError(f"robustness.severities: {', '.join(map(repr, outside)) or '(none)'} outside the table; "
                          f"valid severities: {', '.join(map(str, SEVERITIES))} (0 = clean)")
    return names, sorted({int(s) for s in severities} | {0})


def calibration_numbers(probabilities: torch.Tensor, labels: torch.Tensor, *, bins: int = ECE_BINS,
                        confident: float = CONFIDENT) -> dict:
    """Accuracy, mean confidence, ECE over `bins` equal-width bins ((m-1)/bins, m/bins] and the share of all
    images that are wrong with max probability >= `confident`."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    confidence = confidence.double()
    # Bin m holds confidences in ((m-1)/bins, m/bins]; a confidence of exactly 0 cannot occur (max of a softmax).
    which = torch.clamp(torch.ceil(confidence * bins).long() - 1, 0, bins - 1)
    gap = torch.bincount(which, weights=correct, minlength=bins) - torch.bincount(which, weights=confidence,
                                                                                 minlength=bins)
    n = len(labels)
    return {
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
        "ece": float(gap.abs().sum() / n),
        "confident_error_share": float(((1 - correct) * (confidence >= confident)).sum() / n),
        "n_images": n,
    }


def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size]).softmax(dim=1) for i in range(0, len(images), batch_size)])


def perturb(name: str, severity: int, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
            seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """`images` under perturbation `name` at `severity` (severity 0: the images themselves, untouched)."""
    spec = PERTURBATIONS.get(name)
    if severity == 0:
        return images
    generator = torch.Generator().manual_seed(seed * 1000 + severity)
    value = spec.levels[severity]
    return torch.cat([spec.apply(images[i:i + batch_size], value, model=model, labels=labels[i:i + batch_size],
                                 generator=generator) for i in range(0, len(images), batch_size)])


def evaluate_perturbations(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                           names: Sequence[str] | None = None, severities: Sequence[int] | None = None,
                           seed: int = 0, batch_size: int = 64) -> dict:
    """Accuracy, confidence, ECE and confident errors of `model` ([0, 1] pixels -> logits) per perturbation and
    severity, with the settings that produced them (JSON-able)."""
    names, severities = check_perturbation_settings(names, severities)
    model.eval()
    clean = predict_probabilities(model, images, batch_size)
    results = {}
    for name in names:
        spec = PERTURBATIONS.get(name)
        rows = []
        for severity in severities:
            probabilities = clean if severity == 0 else predict_probabilities(
                model, perturb(name, severity, model, images, labels, seed=seed, batch_size=batch_size), batch_size)
            numbers = calibration_numbers(probabilities, labels)
            numbers["prediction_change_share"] = float((probabilities.argmax(1) != clean.argmax(1)).double().mean())
            rows.append(numbers)
        results[name] = {"parameter": spec.parameter, "adversarial": spec.adversarial, "severities": severities,
                         "values": [spec.levels[s] for s in severities],
                         **{key: [row[key] for row in rows] for key in rows[0] if key != "n_images"}}
    return {
        "settings": {"n_images": len(labels), "seed": seed, "ece_bins": ECE_BINS, "ece_binning": "equal-width",
                     "confident_threshold": CONFIDENT, "confident_error_share_of": "all images",
                     "pgd": {"steps": PGD_STEPS, "step_size": "epsilon/4", "random_start": False, "norm": "Linf"},
                     "pixel_range": [0.0, 1.0],
                     "tables": {name: PERTURBATIONS.get(name).table() for name in names}},
        "perturbations": results,
    }
