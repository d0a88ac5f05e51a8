"""Turn model outputs into pixels: uint8 arrays, PNG grids and GIF animations.

Models work in [-1, 1] (the course's `Normalize(0.5, 0.5)`); people look at uint8. Two ways across:
`"clip"` clamps to [-1, 1] (honest: what the model produced), `"per-image"` min-max normalises each
image and channel separately (the course's look, which hides a wrong overall brightness).

Every grid minidiff draws (`sample`, training previews, `data preview`, GIFs) follows one layout
rule, `columns`: **one column per class, one row per draw**. A batch conditioned on k classes
cycles through them (image i asks for class i mod k, as `Pipeline.contexts` builds it), so k
images to a row put each class in its own column. Without classes the grid is a full rectangle
where n allows one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from minidiff.utils.atomic import atomic_path

NORMALIZE = ("clip", "per-image")


def to_uint8(x: torch.Tensor, normalize: str = "clip") -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> uint8 array (N, H, W, C), the course's `.npy` layout."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is not one of {', '.join(NORMALIZE)}")
    x = x.detach().to("cpu", torch.float32)
    if normalize == "per-image":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        unit = (x - lo) / (hi - lo).clamp_min(1e-8)
    else:
        unit = (x.clamp(-1, 1) + 1) / 2
    pixels = (unit * 255).round().to(torch.uint8)
    return rearrange(pixels, "n c h w -> n h w c").numpy()


def columns(n: int, n_classes: int = 0) -> int:
    """Images per grid row under minidiff's one layout rule (module docstring).

    k > 1 classes cycled over the batch: k columns, one per class. Otherwise the divisor of n
    nearest above sqrt(n) whose grid is at most three times as wide as tall (32 -> 8 columns of 4
    rows: no half-empty last row), else ceil(sqrt(n)) when n allows no such rectangle (7 -> 3).
    """
    if n_classes > 1:
        return min(n_classes, n)
    square = math.isqrt(n - 1) + 1 if n > 1 else 1  # ceil(sqrt(n))
    for width in range(square, n + 1):
        if n % width == 0 and width <= 3 * (n // width):
            return width
    return square


def by_class(pixels_per_class: list):
    """Interleave images per class [(n_a, H, W, C), (n_b, H, W, C), ...] into the cycled
    order a0, b0, ..., a1, b1, ... in which `columns` gives each class its own column. A class
    with fewer images than the longest leaves white tiles at the bottom of its column.

    Also takes torch images (n, C, H, W), as `save_grid` does, one tensor per class of equal n."""
    if isinstance(pixels_per_class[0], torch.Tensor):
        return rearrange(torch.stack(pixels_per_class), "k r c h w -> (r k) c h w")
    longest = max(len(p) for p in pixels_per_class)
    shape = pixels_per_class[0].shape[1:]
    padded = [np.concatenate([p, np.full((longest - len(p), *shape), 255, np.uint8)])
              for p in pixels_per_class]
    return rearrange(np.stack(padded), "k r h w c -> (r k) h w c")


def grid(pixels: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 1,
         captions: list[str] | None = None) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one image, `nrow` per row (default `columns(N)`), on a
    white background; `captions`: one label per column (a class, a mix), written above it."""
    n, h, w, c = pixels.shape
    nrow = nrow or columns(n)
    rows = max(1, -(-n // nrow))
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[top : top + h, left : left + w] = pixels[i]
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    if captions:
        canvas = _captioned(canvas, captions[:nrow], (w + pad) * scale, pad * scale)
    return canvas


CAPTION_HEIGHT = 14  # pixels of the band above a captioned grid


def _captioned(canvas: np.ndarray, captions: list[str], cell: int, pad: int) -> np.ndarray:
    """`canvas` under a white band holding each column's caption in black, cut to its width."""
    from PIL import ImageDraw, ImageFont

    band = np.full((CAPTION_HEIGHT, *canvas.shape[1:]), 255, np.uint8)
    image = Image.fromarray(np.concatenate((band, canvas)))
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # no anti-aliasing: black on white, two colours for a GIF's palette
    font = ImageFont.load_default()
    ink = (0,) * canvas.shape[2] if canvas.shape[2] > 1 else 0
    for k, text in enumerate(captions):
        text = str(text)
        while text and draw.textlength(text, font=font) > cell - 2:
            text = text[:-1]
        left = pad + k * cell + (cell - pad - draw.textlength(text, font=font)) / 2
        draw.text((left, 1), text, fill=ink, font=font)
    return np.asarray(image)


def save_grid(
    x: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    normalize: str = "clip",
    scale: int = 4,
    captions: list[str] | None = None,
) -> None:
    """Save images (N, C, H, W) in [-1, 1], or uint8 pixels (N, H, W, C) as they are, as one PNG
    grid enlarged `scale` times (nearest), with `captions` above its columns if given."""
    check_suffix(path, "grid")
    image = Image.fromarray(grid(_pixels(x, normalize), nrow, scale=scale, captions=captions))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_gif(
    frames: list[torch.Tensor],
    path: str | os.PathLike,
    nrow: int | None = None,
    normalize: str = "clip",
    fps: float = 5.0,
    scale: int = 4,
    captions: list[str] | None = None,
) -> None:
    """Save a list of image batches (each N, C, H, W, or uint8 N, H, W, C) as an animated GIF.

    5 frames per second, as the course shows its denoising animation. Each frame is normalised
    like `save_grid` (default "clip", not the course's per-image min-max), so the last frame of
    the GIF is the PNG grid of the same images, pixel for pixel when it has at most 256 colours
    (a GIF frame's palette) and to the nearest palette colour otherwise.
    """
    check_suffix(path, "gif")
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    images = [_palette(grid(_pixels(f, normalize), nrow, scale=scale, captions=captions))
              for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0, optimize=False)


def _pixels(x, normalize: str) -> np.ndarray:
    """uint8 pixels (N, H, W, C) as they are; model images (N, C, H, W) through `to_uint8`."""
    if x.dtype in (torch.uint8, np.uint8):
        return np.asarray(x)
    return to_uint8(x, normalize)


def _palette(pixels: np.ndarray) -> Image.Image:
    """An RGB grid as a palette image: its exact colours when there are at most 256, else
    Pillow's median-cut 256 without dithering (which would speckle the pixel art)."""
    colours, index = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0, return_inverse=True)
    if len(colours) > 256 or pixels.shape[-1] != 3:
        return Image.fromarray(pixels).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    image = Image.fromarray(index.reshape(pixels.shape[:2]).astype(np.uint8), mode="P")
    image.putpalette(colours.astype(np.uint8).tobytes())
    return image


SUFFIXES = {"grid": ".png", "gif": ".gif", "npy": ".npy", "json": ".json"}


def check_suffix(path: str | os.PathLike, kind: str) -> None:
    """Refuse a file name whose suffix promises another format than the one written (a PNG
    grid named x.jpg): the one rule the commands check before their work."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix != SUFFIXES[kind]:
        raise ValueError(f"{os.fspath(path)}: minidiff writes this as {SUFFIXES[kind][1:].upper()}"
                         f"; give a name ending in {SUFFIXES[kind]}")
