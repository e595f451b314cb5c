"""Figures of an inspection report, all self-contained: PNGs as data URIs, plotly figures as divs (plotly.js is
inlined once per report by `unirep.inspect.report`, never by a section).

    >>> png_data_uri(image_grid(pixels[:16], ncols=8))                 # 'data:image/png;base64,...'
    >>> png_data_uri(heatmap_overlay(pixels[0], occlusion_map))
    >>> plotly_div(plotly.graph_objects.Figure(...))                    # '<div>...<script>Plotly.newPlot(...)'
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import torch
from PIL import Image


def _to_uint8_image(array: Any) -> Image.Image:
    """A PIL image of a (H, W) / (H, W, 3) / (3, H, W) array or tensor, float in [0, 1] or uint8."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().float().numpy() if array.dtype != torch.uint8 else array.cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = (np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array)


def png_data_uri(figure: Any, *, scale: int = 1) -> str:
    """`data:image/png;base64,...` of a PIL image, an image array/tensor ([0, 1] float or uint8; (H, W), (H, W, 3) or
    (3, H, W)) or a matplotlib figure (closed afterwards). `scale` enlarges small images by nearest neighbour, so
    32-pixel tiles stay readable without the browser blurring them."""
    buffer = io.BytesIO()
    if hasattr(figure, "savefig"):
        import matplotlib.pyplot as plt

        figure.savefig(buffer, format="png", bbox_inches="tight", dpi=100)
        plt.close(figure)
    else:
        image = figure if isinstance(figure, Image.Image) else _to_uint8_image(figure)
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(uri: str, alt: str, *, title: str | None = None, css_class: str = "figure",
            width: int | None = None) -> str:
    """An <img> of a data URI; `alt` names what it shows (the browser test checks every image is present)."""
    size = f' width="{width}"' if width else ""
    tip = f' title="{html.escape(title)}"' if title else ""
    return f'<img class="{css_class}" alt="{html.escape(alt)}"{tip}{size} src="{uri}">'


def image_grid(images: torch.Tensor | np.ndarray, ncols: int = 8, *, pad: int = 2,
               background: float = 1.0) -> Image.Image:
    """One image of (N, 3, H, W) [0, 1] images in rows of `ncols`, `pad` pixels apart (white by default)."""
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float().cpu()
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, _, h, w = images.shape
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, -(-n // ncols))
    canvas = torch.full((3, nrows * (h + pad) + pad, ncols * (w + pad) + pad), background)
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[:, top:top + h, left:left + w] = images[i]
    return _to_uint8_image(canvas.clamp(0, 1))


def colourise(values: np.ndarray | torch.Tensor, *, cmap: str = "inferno", symmetric: bool = False) -> np.ndarray:
    """(H, W) values -> (H, W, 3) float RGB in [0, 1] through a matplotlib colour map: min-max scaled, or, with
    `symmetric`, scaled by the largest |value| around 0 (signed attributions, cmap "RdBu_r")."""
    import matplotlib

    values = np.nan_to_num(np.asarray(torch.as_tensor(values).detach().cpu().float(), dtype=np.float64))
    if symmetric:
        bound = float(np.abs(values).max()) or 1.0
        scaled = 0.5 + 0.5 * values / bound
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return matplotlib.colormaps[cmap](scaled)[..., :3]


def heatmap_overlay(image: torch.Tensor | np.ndarray | Image.Image, heatmap: torch.Tensor | np.ndarray, *,
                    alpha: float = 0.5, cmap: str = "inferno", symmetric: bool = False) -> Image.Image:
    """`heatmap` (h, w) resized (bilinear) onto `image` ((3, H, W) [0, 1], or a PIL image) and blended with weight
    `alpha`; the map is min-max scaled (or around 0 with `symmetric`) before the colour map."""
    base = image if isinstance(image, Image.Image) else _to_uint8_image(image)
    base = base.convert("RGB")
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32) if not isinstance(heatmap, torch.Tensor)
                           else heatmap.detach().float().cpu())
    heat = torch.nn.functional.interpolate(heat[None, None], size=(base.height, base.width), mode="bilinear",
                                           align_corners=False)[0, 0]
    colour = colourise(heat, cmap=cmap, symmetric=symmetric)
    blended = (1 - alpha) * np.asarray(base, dtype=np.float64) / 255.0 + alpha * colour
    return _to_uint8_image(blended)


def plotly_div(fig: Any, *, div_id: str | None = None) -> str:
    """A plotly figure as an HTML div with its plotting script, without plotly.js (the report inlines it once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def plotly_js() -> str:
    """The plotly.js bundle of the installed plotly package (offline; inlined once per report)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


__all__ = ["colourise", "heatmap_overlay", "image_grid", "img_tag", "plotly_div", "plotly_js", "png_data_uri"]
