"""Small line plots drawn with Pillow, for tutorials and training curves.

minidiff draws its few curves itself rather than depending on a plotting library: a plot here is
a handful of polylines on labelled axes, and Pillow is already needed for PNG and GIF output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from minidiff.utils.atomic import atomic_path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    log_y: bool = False,
    size: tuple[int, int] = (640, 400),
) -> None:
    """Draw each named (x, y) series as a line on shared axes and save a PNG."""
    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    xs = [np.asarray(x, float) for x, _ in series.values()]
    ys = [np.asarray(y, float) for _, y in series.values()]
    if log_y:
        ys = [np.log10(np.maximum(y, 1e-300)) for y in ys]
    x_lo, x_hi = min(x.min() for x in xs), max(x.max() for x in xs)
    y_lo, y_hi = min(y.min() for y in ys), max(y.max() for y in ys)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)

    def to_pixel(x, y):
        px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
        py = height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return list(zip(px.tolist(), py.tolist()))

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for frac in np.linspace(0, 1, 5):  # five ticks on each axis, labelled with their values
        y_value, x_value = y_lo + frac * (y_hi - y_lo), x_lo + frac * (x_hi - x_lo)
        (_, py), = to_pixel(np.array([x_lo]), np.array([y_value]))
        (px, _), = to_pixel(np.array([x_value]), np.array([y_lo]))
        label = f"1e{y_value:.1f}" if log_y else f"{y_value:.3g}"
        draw.text((4, py - 6), label, fill="black")
        draw.text((px - 10, height - bottom + 6), f"{x_value:.4g}", fill="black")
    for i, (name, x, y) in enumerate(zip(series, xs, ys)):
        colour = COLOURS[i % len(COLOURS)]
        draw.line(to_pixel(x, y), fill=colour, width=2)
        draw.text((left + 10, top + 8 + 14 * i), f"-- {name}", fill=colour)
    draw.text((left, 8), title, fill="black")
    draw.text((width // 2 - 20, height - 20), xlabel, fill="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
