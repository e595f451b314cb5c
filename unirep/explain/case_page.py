"""The case-based explanation page (kNN neighbours, prototypes): one offline HTML file, images inlined as PNG data
URIs, no script, no network. Each explained test example is a `<section class="case">` holding the decision and
its evidence; the page ends with the run's configuration, versions, seeds and the task manifest's digest (the
same record as explain.json)."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

THUMB = 112  # displayed side of every thumbnail (pixels are scaled, not re-sampled, for small inputs)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1200px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
figure { display: inline-block; margin: 0 .4rem .6rem 0; text-align: center; font-size: .78rem; vertical-align: top; }
figure img { display: block; image-rendering: pixelated; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0 1rem; }
td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; vertical-align: middle; }
th:first-child, td:first-child { text-align: left; }
.case { margin: 1rem 0 2rem; padding-left: .8rem; border-left: 4px solid #3b6ea5; }
.wrong { border-left-color: #c0392b; }
.decision { font-weight: 600; }
pre { background: #f6f6f6; padding: .6rem; font-size: .75rem; overflow-x: auto; }
"""
HEAT = colormaps["inferno"]


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """uint8 (3, S, S) -> a THUMB-sized RGB image (nearest-neighbour, so input pixels stay visible)."""
    image = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return image.resize((THUMB, THUMB), Image.NEAREST)


def scaled_box(box, size: int) -> tuple[float, ...]:
    factor = THUMB / size
    return tuple(float(v) * factor for v in box)


def with_box(pixels: torch.Tensor, box=None, colour=(255, 215, 0), band_rows: tuple[int, int] | None = None
             ) -> Image.Image:
    """The image with a box (x1, y1, x2, y2, end-exclusive input pixels) and optional band lines (input rows)."""
    image = to_pil(pixels)
    draw = ImageDraw.Draw(image)
    size = pixels.shape[-1]
    if band_rows is not None:
        for row in band_rows:
            y = row * THUMB / size
            draw.line((0, y, THUMB, y), fill=(0, 200, 255), width=1)
    if box is not None:
        x1, y1, x2, y2 = scaled_box(box, size)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=2)
    return image


def heat_overlay(pixels: torch.Tensor, similarity: torch.Tensor, box=None, alpha: float = 0.55) -> Image.Image:
    """The similarity map (h, w), bicubically upsampled and min-max scaled, over the image, with the box."""
    up = torch.nn.functional.interpolate(similarity[None, None].double(), size=(THUMB, THUMB), mode="bicubic",
                                         align_corners=False)[0, 0].numpy()
    span = up.max() - up.min()
    scaled = (up - up.min()) / span if span > 0 else np.zeros_like(up)
    heat = (HEAT(scaled)[..., :3] * 255).astype(np.float64)
    base = np.asarray(to_pil(pixels), dtype=np.float64)
    image = Image.fromarray((alpha * heat + (1 - alpha) * base).astype(np.uint8))
    if box is not None:
        ImageDraw.Draw(image).rectangle(tuple(v - (1 if k >= 2 else 0) for k, v in
                                              enumerate(scaled_box(box, pixels.shape[-1]))),
                                        outline=(0, 255, 120), width=2)
    return image


def figure(image: Image.Image, caption: str, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return (f'<figure{cls}><img src="{png_uri(image)}" width="{THUMB}" height="{THUMB}" alt="{html.escape(caption)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"


def table(headers: list[str], rows: list[list[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, lead: str, sections: list[str], record: dict) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{lead}</p>{''.join(sections)}"
            "<h2>Configuration</h2><pre id=\"record\">"
            f"{html.escape(json.dumps(record, indent=2, sort_keys=True, default=str))}</pre></body></html>")
