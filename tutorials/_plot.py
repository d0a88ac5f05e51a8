"""Small line and bar plots drawn with Pillow, for the tutorials.

minidiff draws its few charts itself rather than depending on a plotting library: a plot here is
a handful of polylines or bars on labelled axes, and Pillow is already needed for PNG and GIF
output. Axis ticks sit on round numbers (1, 2 or 5 times a power of ten; whole powers of ten on
a log axis) and are labelled the way a person writes them: `0.25`, `100`, `1e-8`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from minidiff.utils.atomic import atomic_path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
MARGIN = {"left": 64, "right": 20, "top": 46, "bottom": 50}


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """At most `most` round values covering [lo, hi], one step of 1, 2 or 5 times 10^k apart."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / (most - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    """`value` with as many decimals as the tick step needs, and no float noise (0.30000000004)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or step < 1e-4:
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def power_label(exponent: int) -> str:
    """10^exponent as a person writes it: 0.01, 1, 1000, or 1e-8 past four digits."""
    return f"{10.0 ** exponent:g}" if -3 <= exponent <= 4 else f"1e{exponent}"


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    log_y: bool = False,
    size: tuple[int, int] = (640, 400),
) -> None:
    """Draw each named (x, y) series as a line on shared axes and save a PNG."""
    xs = [np.asarray(x, float) for x, _ in series.values()]
    ys = [np.asarray(y, float) for _, y in series.values()]
    if log_y:
        ys = [np.log10(np.maximum(y, 1e-300)) for y in ys]
    x_ticks = nice_ticks(min(x.min() for x in xs), max(x.max() for x in xs))
    y_lo, y_hi = min(y.min() for y in ys), max(y.max() for y in ys)
    if log_y:  # whole powers of ten, every 1, 2, 5, ... of them
        decades = nice_ticks(math.floor(y_lo), math.ceil(y_hi), most=8)
        y_ticks = [e for e in decades if e == int(e)]
        y_labels = [power_label(int(e)) for e in y_ticks]
    else:
        y_ticks = nice_ticks(y_lo, y_hi)
        y_labels = [tick_label(v, y_ticks[1] - y_ticks[0]) for v in y_ticks]
    x_labels = [tick_label(v, x_ticks[1] - x_ticks[0]) for v in x_ticks]
    image, draw, to_pixel = _axes(size, (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1]))
    for value, label in zip(y_ticks, y_labels):
        _y_tick(draw, to_pixel(x_ticks[0], value)[1], label)
    for value, label in zip(x_ticks, x_labels):
        _x_tick(draw, to_pixel(value, y_ticks[0])[0], size[1], label)
    legend_x = MARGIN["left"]
    for i, (name, x, y) in enumerate(zip(series, xs, ys)):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([to_pixel(a, b) for a, b in zip(x.tolist(), y.tolist())], fill=colour, width=2)
        draw.line([legend_x, 30, legend_x + 16, 30], fill=colour, width=2)  # the legend, a row
        draw.text((legend_x + 20, 24), name, fill=colour)
        legend_x += 40 + draw.textlength(name)
    _save(image, draw, size, title, xlabel, path)


def bar_plot(
    bars: dict[str, float],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    colours: Sequence[str] | None = None,
    size: tuple[int, int] = (640, 400),
) -> None:
    """One labelled bar per entry (value written above it), from zero, and save a PNG."""
    y_ticks = nice_ticks(0.0, max(max(bars.values()), 1e-12))
    image, draw, to_pixel = _axes(size, (0.0, float(len(bars))), (0.0, y_ticks[-1]))
    for value in y_ticks:
        _y_tick(draw, to_pixel(0, value)[1], tick_label(value, y_ticks[1] - y_ticks[0]))
    for i, (name, value) in enumerate(bars.items()):
        colour = (colours or COLOURS)[i % len(colours or COLOURS)]
        (x0, y0), (x1, y1) = to_pixel(i + 0.15, value), to_pixel(i + 0.85, 0)
        draw.rectangle([x0, y0, x1, y1], fill=colour)
        number = f"{value:g}"
        draw.text(((x0 + x1 - draw.textlength(number)) / 2, y0 - 14), number, fill="black")
        _x_tick(draw, (x0 + x1) / 2, size[1], name)
    _save(image, draw, size, title, xlabel, path)


def _axes(size, x_range, y_range):
    """A white image with the plot frame drawn, and a function from data to pixel coordinates."""
    width, height = size
    (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range
    inner_w = width - MARGIN["left"] - MARGIN["right"]
    inner_h = height - MARGIN["top"] - MARGIN["bottom"]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = MARGIN["left"] + (x - x_lo) / (x_hi - x_lo) * inner_w
        py = height - MARGIN["bottom"] - (y - y_lo) / (y_hi - y_lo) * inner_h
        return px, py

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([MARGIN["left"], MARGIN["top"], width - MARGIN["right"],
                    height - MARGIN["bottom"]], outline="black")
    return image, draw, to_pixel


def _y_tick(draw: ImageDraw.ImageDraw, py: float, label: str) -> None:
    left = MARGIN["left"]
    draw.line([left - 4, py, left, py], fill="black")
    draw.text((left - 8 - draw.textlength(label), py - 6), label, fill="black")


def _x_tick(draw: ImageDraw.ImageDraw, px: float, height: int, label: str) -> None:
    bottom = height - MARGIN["bottom"]
    draw.line([px, bottom, px, bottom + 4], fill="black")
    draw.text((px - draw.textlength(label) / 2, bottom + 8), label, fill="black")


def _save(image, draw, size, title, xlabel, path) -> None:
    width, height = size
    draw.text((MARGIN["left"], 6), title, fill="black")
    draw.text(((width - draw.textlength(xlabel)) / 2, height - 22), xlabel, fill="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
