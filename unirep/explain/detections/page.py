"""The detection-explanation page: one offline HTML file (images inlined as PNG data URIs, no script, no network).

Per image: the image with its ground-truth boxes (white, dashed) and the explained detections (coloured, numbered);
per detection a row of maps (each method x variant, min-max scaled, `inferno`) over the image, with the detection's
box drawn on each, and its pointing-game / energy-in-box numbers against its ground-truth box. The page ends with
the run's configuration, versions, seeds and the task manifest's digest (the same as explain.json).
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import torch
from PIL import Image, ImageDraw

SCALE = 2  # displayed pixels per image pixel (the scenes are 128 px)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60))
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
figure { display: inline-block; margin: 0 .4rem .6rem 0; text-align: center; font-size: .8rem; }
figure img { display: block; image-rendering: pixelated; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0 1rem; }
td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.detection { margin: .6rem 0 1.2rem; padding-left: .6rem; border-left: 4px solid var(--colour); }
pre { background: #f6f6f6; padding: .6rem; font-size: .75rem; overflow-x: auto; }
"""


def colour_of(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rgb(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8)).resize(
        (image.shape[-1] * SCALE, image.shape[-2] * SCALE), Image.NEAREST)


def _draw_box(draw: ImageDraw.ImageDraw, box, colour, width: int = 2, dashed: bool = False) -> None:
    x1, y1, x2, y2 = (float(v) * SCALE for v in box)
    if not dashed:
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        return
    for (a, b) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in np.arange(0, length, 8):
            t0, t1 = start / max(length, 1), min(start + 4, length) / max(length, 1)
            draw.line((a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0,
                       a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1), fill=colour, width=width)


def overview_image(image: torch.Tensor, truth_boxes, detections: list[dict]) -> Image.Image:
    """The image with ground-truth boxes (dashed white) and the explained detections (coloured, numbered)."""
    canvas = _rgb(image)
    draw = ImageDraw.Draw(canvas)
    for box in truth_boxes:
        _draw_box(draw, box, (255, 255, 255), dashed=True)
    for k, detection in enumerate(detections):
        _draw_box(draw, detection["box"], colour_of(k))
        draw.text((float(detection["box"][0]) * SCALE + 3, float(detection["box"][1]) * SCALE + 1), str(k),
                  fill=colour_of(k))
    return canvas


def map_overlay(image: torch.Tensor, saliency: torch.Tensor, box, colour, alpha: float = 0.55) -> Image.Image:
    """The map (min-max scaled, matplotlib's inferno) blended over the image, the detection's box on top."""
    from matplotlib import colormaps

    values = saliency.detach().double().cpu().numpy()
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    heat = colormaps["inferno"](scaled)[..., :3]
    base = image.permute(1, 2, 0).cpu().numpy() / 255.0
    blended = ((1 - alpha) * base + alpha * heat) * 255.0
    canvas = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).resize(
        (image.shape[-1] * SCALE, image.shape[-2] * SCALE), Image.NEAREST)
    _draw_box(ImageDraw.Draw(canvas), box, colour)
    return canvas


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "hit" if value else "miss"
    return f"{value:.{digits}f}"


def image_section(image_id: str, image: torch.Tensor, truth_boxes, detections: list[dict],
                  maps: dict[str, dict[str, torch.Tensor]], timings: dict[str, dict]) -> str:
    """One image's part of the page. `maps[method][variant]` is (T, H, W) over its explained detections."""
    parts = [f'<section class="image" data-image="{html.escape(image_id)}"><h2>{html.escape(image_id)}</h2>',
             f'<figure><img src="{_png_uri(overview_image(image, truth_boxes, detections))}" '
             f'alt="{html.escape(image_id)} with boxes"><figcaption>ground truth dashed, detections numbered'
             '</figcaption></figure>']
    if not detections:
        parts.append("<p>No detection above the confidence threshold: nothing to explain.</p>")
    for k, detection in enumerate(detections):
        colour = "#{:02x}{:02x}{:02x}".format(*colour_of(k))
        parts.append(f'<div class="detection" data-detection="{k}" style="--colour: {colour}">'
                     f'<p><b>#{k} {html.escape(detection["class"])}</b> score {detection["score"]:.3f}, box '
                     f'{", ".join(f"{v:.1f}" for v in detection["box"])}; ground truth: '
                     f'{html.escape(detection.get("truth_note", ""))}</p>')
        for method, variants in maps.items():
            for variant, values in variants.items():
                uri = _png_uri(map_overlay(image, values[k], detection["box"], colour_of(k)))
                parts.append(f'<figure data-method="{method}" data-variant="{variant}"><img src="{uri}" '
                             f'alt="{method} {variant} map of detection {k}"><figcaption>{method} · {variant}'
                             "</figcaption></figure>")
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_number(m['pointing_game'])}</td>"
                       f"<td>{_number(m['energy_in_box'])}</td></tr>"
                       for name, m in detection.get("metrics", {}).items())
        if rows:
            parts.append("<table><thead><tr><th>map</th><th>pointing game</th><th>energy in box</th></tr></thead>"
                         f"<tbody>{rows}</tbody></table>")
        parts.append("</div>")
    timing_rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{t['wall_s']:.2f}</td><td>{t['cpu_s']:.2f}</td></tr>"
                          for m, t in timings.items())
    parts.append("<table class=\"timings\"><thead><tr><th>method</th><th>wall s (image)</th><th>CPU s</th></tr>"
                 f"</thead><tbody>{timing_rows}</tbody></table></section>")
    return "".join(parts)


def page(title: str, lead: str, sections: list[str], record: dict) -> str:
    import json

    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{lead}</p>{''.join(sections)}"
            "<h2>Configuration</h2><pre id=\"record\">"
            f"{html.escape(json.dumps(record, indent=2, sort_keys=True))}</pre></body></html>")
