"""Small line charts drawn with Pillow, for the lab: the SNR curve and the loss curve.

Pillow is already a dependency, and a chart of a few hundred points drawn into a 480 x 240 image
takes about a millisecond, so dragging t redraws it at once with its marker.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["line_chart"]

WIDTH, HEIGHT, MARGIN = 480, 240, 36  # pixels; the margin holds the axis labels


def line_chart(x, y, title: str, x_label: str, mark: float | None = None,
               log_y: bool = False) -> np.ndarray:
    """uint8 (HEIGHT, WIDTH, 3): y against x, log10 y where `log_y`, a red line at x = `mark`."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
    x, y = x[keep], y[keep]
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 4), title, fill="black")
    draw.text((WIDTH - MARGIN - 6 * len(x_label), HEIGHT - 14), x_label, fill="black")
    left, top, right, bottom = MARGIN, MARGIN // 2 + 8, WIDTH - 8, HEIGHT - MARGIN // 2 - 4
    draw.rectangle((left, top, right, bottom), outline="grey")
    if len(x) == 0:
        draw.text((left + 8, top + 8), "nothing to plot yet", fill="grey")
        return np.asarray(image)
    shown = np.log10(y) if log_y else y
    x_lo, x_hi = _span(x)
    y_lo, y_hi = _span(shown)
    to_px = lambda a, b: (left + (a - x_lo) / (x_hi - x_lo) * (right - left),
                          bottom - (b - y_lo) / (y_hi - y_lo) * (bottom - top))
    draw.line([to_px(a, b) for a, b in zip(x, shown)], fill="navy", width=2)
    for value, at in ((y_hi, top), (y_lo, bottom - 10)):
        draw.text((2, at), f"{10**value:.0e}" if log_y else f"{value:.3g}", fill="black")
    draw.text((left, bottom + 2), f"{x_lo:g}", fill="black")
    draw.text((right - 30, bottom + 2), f"{x_hi:g}", fill="black")
    if mark is not None and x_lo <= mark <= x_hi:
        px, _ = to_px(mark, y_lo)
        draw.line([(px, top), (px, bottom)], fill="red", width=2)
    return np.asarray(image)


def _span(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo - 1, hi + 1)
