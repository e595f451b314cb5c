"""What a unit looks for: its top-k exemplars among the task's images, with the receptive-field crop around the
position where it fires most (the "dataset examples" of Olah et al.'s feature-visualisation work and Lucent).

A unit is one channel of a layer's map. Its activation on an image is the map's maximum over positions; the top-k
images are those with the highest maxima (ties: the earlier image). The receptive field is measured
**empirically, by the gradient of the unit w.r.t. the input** (not from kernel sizes and strides, which do not
exist for ViT blocks): at the map's central position, the gradient of the summed channels, summed in absolute
value over a batch of images, is non-zero exactly on the theoretical receptive field (its bounding box is
recorded), and the effective receptive field (Luo et al. 2016) is the smallest square around the position that
holds `rf_mass` (90 %) of that gradient's L1 mass. The crop shown is that square (at least one map stride)
centred on the argmax cell's centre in input pixels, shifted inside the image.

Units shown per layer: `units` (a count: the most selective units, i.e. the largest spread of their maxima over
the images; dead units never; or a list of channel indices).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from unirep.errors import ConfigError
from unirep.inspect.figures import image_grid, img_tag, png_data_uri
from unirep.inspect.sections import Section, SectionResult, register_section

DEFAULTS: dict[str, Any] = {"units": 4, "top_k": 5, "images": None, "split": "train", "rf_mass": 0.9,
                            "rf_images": 8, "layers": None}


def max_and_argmax(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, 2): each channel's maximum over positions and the flat index of the first maximum."""
    flat = maps.flatten(2)
    values, index = flat.max(dim=2)
    return torch.stack([values.float(), index.float()], dim=2)


def receptive_field(ctx, layer: str, pixels: torch.Tensor, mass: float = 0.9) -> dict[str, Any]:
    """Empirical receptive field of `layer` at its central map position (module docstring): the theoretical
    support's bounding box, the effective square side holding `mass` of |gradient|, and the map's stride."""
    x = pixels.to(ctx.device).clone().requires_grad_(True)
    fmap = ctx.layer_maps(x, [layer], grad=True)[layer]
    h, w = fmap.shape[-2:]
    ci, cj = h // 2, w // 2
    fmap[:, :, ci, cj].sum().backward()
    grad = x.grad.detach().abs().sum(dim=(0, 1)).double().cpu()  # (H, W)
    H, W = grad.shape
    stride = (H / h, W / w)
    centre = ((ci + 0.5) * stride[0], (cj + 0.5) * stride[1])
    total = float(grad.sum())
    if total <= 0:
        return {"method": "gradient", "theoretical_box": None, "theoretical_size": [0, 0], "effective_size": 0,
                "stride": list(stride), "map_size": [h, w], "position": [ci, cj], "centre_offset": [0.0, 0.0],
                "mass": mass, "images": int(len(pixels))}
    rows = torch.nonzero(grad.sum(1) > total * 1e-12).flatten()
    cols = torch.nonzero(grad.sum(0) > total * 1e-12).flatten()
    box = [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]
    # The field's centre is where its gradient mass is (padding and stride offsets move it off the nominal cell
    # centre); crops are centred on the argmax cell's centre plus this offset.
    ys, xs = torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5
    mass_centre = (float((grad.sum(1) * ys).sum()) / total, float((grad.sum(0) * xs).sum()) / total)
    effective = max(H, W)
    for side in range(1, max(H, W) + 1):
        y0, x0 = _square(mass_centre, side, H, W)
        if float(grad[y0:y0 + side, x0:x0 + side].sum()) >= mass * total:
            effective = side
            break
    offset = [mass_centre[0] - centre[0], mass_centre[1] - centre[1]]
    return {"method": "gradient", "theoretical_box": box, "theoretical_size": [box[2] - box[0], box[3] - box[1]],
            "effective_size": int(effective), "stride": [float(s) for s in stride], "map_size": [int(h), int(w)],
            "position": [int(ci), int(cj)], "centre_offset": offset, "mass": mass, "images": int(len(pixels))}


def _square(centre: tuple[float, float], side: int, H: int, W: int) -> tuple[int, int]:
    """Top-left corner of a side x side square centred on `centre`, shifted to lie inside the H x W image."""
    y0 = int(round(centre[0] - side / 2))
    x0 = int(round(centre[1] - side / 2))
    return min(max(0, y0), max(0, H - side)), min(max(0, x0), max(0, W - side))


def crop_box(flat_index: int, map_size: tuple[int, int], image_size: tuple[int, int], side: int,
             offset: tuple[float, float] = (0.0, 0.0)) -> list[int]:
    """[y0, x0, y1, x1] of the crop around map cell `flat_index` (its centre in input pixels, plus `offset`)."""
    h, w = map_size
    H, W = image_size
    i, j = divmod(int(flat_index), w)
    centre = ((i + 0.5) * H / h + offset[0], (j + 0.5) * W / w + offset[1])
    side = int(min(max(side, int(np.ceil(max(H / h, W / w)))), min(H, W)))
    y0, x0 = _square(centre, side, H, W)
    return [y0, x0, y0 + side, x0 + side]


def choose_units(maxima: torch.Tensor, units: int | list[int]) -> list[int]:
    """Channel indices: the given list, or the `units` most selective live channels (largest std of maxima)."""
    channels = maxima.shape[1]
    if isinstance(units, list | tuple):
        bad = [u for u in units if not 0 <= int(u) < channels]
        if bad:
            raise ConfigError(f"exemplars.units {bad} out of range: the layer has {channels} channels "
                              f"(0..{channels - 1})")
        return [int(u) for u in units]
    spread = maxima.double().std(dim=0) if len(maxima) > 1 else maxima.double().abs().sum(0)
    live = (maxima.max(dim=0).values > 0) | (maxima.min(dim=0).values < 0)
    order = sorted(range(channels), key=lambda c: (-float(spread[c]) if live[c] else float("inf"), c))
    return [c for c in order[: int(units)] if live[c]]


def top_exemplars(stats: torch.Tensor, unit: int, k: int) -> list[int]:
    """Indices of the k images with the highest maximum of `unit` (stable: ties go to the earlier image)."""
    values = stats[:, unit, 0].double().numpy()
    return [int(i) for i in np.argsort(-values, kind="stable")[:k]]


def layer_exemplars(ctx, layer: str, pixels: torch.Tensor, labels: torch.Tensor, ids: list[str],
                    settings: dict[str, Any]) -> dict[str, Any]:
    """Top-k exemplars of the chosen units of one layer, with crops and the receptive field."""
    stats = ctx.collect_maps(pixels, [layer], reduce=max_and_argmax)[layer]  # (N, C, 2)
    rf = receptive_field(ctx, layer, pixels[: int(settings["rf_images"])], float(settings["rf_mass"]))
    map_size = tuple(rf["map_size"])
    side = rf["effective_size"]
    units = []
    for unit in choose_units(stats[:, :, 0], settings["units"]):
        top = []
        for index in top_exemplars(stats, unit, int(settings["top_k"])):
            flat = int(stats[index, unit, 1])
            box = crop_box(flat, map_size, tuple(pixels.shape[-2:]), side, tuple(rf["centre_offset"]))
            top.append({"index": index, "id": ids[index], "label": int(labels[index]),
                        "class": ctx.class_names[int(labels[index])] if int(labels[index]) < len(ctx.class_names)
                        else str(int(labels[index])), "activation": float(stats[index, unit, 0]),
                        "argmax": list(divmod(flat, map_size[1])), "crop": box})
        maxima = stats[:, unit, 0]
        units.append({"unit": unit, "mean_max": float(maxima.mean()), "top": top,
                      "share_positive": float((maxima > 0).float().mean())})
    return {"receptive_field": rf, "channels": int(stats.shape[1]), "units": units}


@register_section("exemplars", title="What a unit looks for: top exemplars and receptive-field crops",
                  needs_spatial=True)
class Exemplars(Section):
    defaults = DEFAULTS

    """Per selected layer, the top-k task images of a few units, each with its crop around the argmax."""

    def run(self, ctx) -> SectionResult:
        settings = ctx.section_settings(self.name, DEFAULTS)
        n = int(settings["images"] or ctx.n_images)
        pixels, labels, ids = ctx.pixels(settings["split"], n)
        layers = settings["layers"] or list(ctx.layer_info)
        if isinstance(layers, str):
            layers = [name for name in layers.split(",") if name]
        per_layer = {layer: layer_exemplars(ctx, layer, pixels, labels, ids, settings) for layer in layers}
        numbers = {"settings": {**settings, "images": n, "layers": layers,
                                "unit_activation": "maximum of the unit's map over positions",
                                "receptive_field": "gradient of the unit w.r.t. the input (empirical)"},
                   "layers": per_layer}
        html_parts = [_layer_html(ctx, layer, result, pixels) for layer, result in per_layer.items()]
        notes = [f"{n} {settings['split']} images; receptive fields measured by the gradient of the unit at the "
                 f"map's centre w.r.t. the input (theoretical = non-zero support, effective = {settings['rf_mass']:.0%}"
                 " of its L1 mass)"]
        return SectionResult(self.name, self.title, numbers, "".join(html_parts), notes)

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        """For layers and units both results show: how many top-k exemplars the two backbones share (meaningful
        for two checkpoints of one network, whose channels correspond)."""
        shared: dict[str, Any] = {}
        for layer, result in a.numbers["layers"].items():
            other = b.numbers["layers"].get(layer)
            if other is None:
                continue
            units_b = {u["unit"]: u for u in other["units"]}
            for unit in result["units"]:
                if unit["unit"] in units_b:
                    ids_a = {t["id"] for t in unit["top"]}
                    ids_b = {t["id"] for t in units_b[unit["unit"]]["top"]}
                    shared.setdefault(layer, {})[str(unit["unit"])] = len(ids_a & ids_b) / max(1, len(ids_a))
        rows = "".join(f"<tr><td>{layer}</td><td>{unit}</td><td>{share:.2f}</td></tr>"
                       for layer, units in shared.items() for unit, share in units.items())
        body = ('<p>Share of top exemplars both backbones pick for the same unit (channels correspond only between '
                'checkpoints of one network).</p><table class="numbers"><thead><tr><th>layer</th><th>unit</th>'
                f"<th>shared top-k</th></tr></thead><tbody>{rows}</tbody></table>") if shared else (
                "<p>No unit appears in both results (different units chosen, or different layers).</p>")
        return SectionResult(self.name, self.title, {"shared_top_k": shared}, body)


def _boxed(image: torch.Tensor, box: list[int]) -> Image.Image:
    from unirep.inspect.figures import _to_uint8_image

    picture = _to_uint8_image(image).convert("RGB")
    scale = max(1, 96 // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    y0, x0, y1, x1 = (v * scale for v in box)
    ImageDraw.Draw(picture).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 40, 40), width=max(1, scale))
    return picture


def _layer_html(ctx, layer: str, result: dict[str, Any], pixels: torch.Tensor) -> str:
    rf = result["receptive_field"]
    rows = []
    for unit in result["units"]:
        full = [_boxed(pixels[t["index"]], t["crop"]) for t in unit["top"]]
        crops = [pixels[t["index"], :, t["crop"][0]:t["crop"][2], t["crop"][1]:t["crop"][3]] for t in unit["top"]]
        size = 64
        crops = torch.stack([torch.nn.functional.interpolate(c[None], size=(size, size), mode="nearest")[0]
                             for c in crops]) if crops else torch.zeros(0, 3, size, size)
        tips = ", ".join(f"{t['id']} ({t['class']}): {t['activation']:.3g}" for t in unit["top"])
        images = "".join(img_tag(png_data_uri(p), f"{layer} unit {unit['unit']} exemplar {r + 1}", title=tips,
                                 css_class="tile") for r, p in enumerate(full))
        crop_img = img_tag(png_data_uri(image_grid(crops, ncols=len(crops) or 1)),
                           f"{layer} unit {unit['unit']} receptive-field crops", css_class="tile")
        rows.append(f'<div class="unit"><div class="unit-label">unit {unit["unit"]}<br><small>mean max '
                    f'{unit["mean_max"]:.3g}</small></div><div class="unit-tiles">{images}</div>'
                    f'<div class="unit-crops">{crop_img}</div></div>')
    size = "×".join(map(str, rf["theoretical_size"]))
    head = (f"<h3>{html.escape(layer)}</h3><p>{result['channels']} channels, map {rf['map_size'][0]}×"
            f"{rf['map_size'][1]} (stride {rf['stride'][0]:.3g} px); receptive field at the centre (gradient): "
            f"theoretical {size} px, effective {rf['effective_size']} px ({rf['mass']:.0%} of the mass).</p>")
    return f'<div class="exemplar-layer" data-layer="{html.escape(layer)}">{head}{"".join(rows)}</div>'
