"""Turn model outputs into pixels: uint8 arrays, PNG grids and GIF animations.

Models work in [-1, 1] (the course's `Normalize(0.5, 0.5)`); people look at uint8. Two ways across:
`"clip"` clamps to [-1, 1] (honest: what the model produced), `"per-image"` min-max normalises each
image and channel separately (the course's look, which hides a wrong overall brightness).
"""

from __future__ import annotations

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


def grid(pixels: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one image, `nrow` per row, on a white background."""
    n, h, w, c = pixels.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, -(-n // nrow))
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[top : top + h, left : left + w] = pixels[i]
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas


def save_grid(
    x: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    normalize: str = "clip",
    scale: int = 4,
) -> None:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid, enlarged `scale` times (nearest)."""
    image = Image.fromarray(grid(to_uint8(x, normalize), nrow, scale=scale))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_gif(
    frames: list[torch.Tensor],
    path: str | os.PathLike,
    nrow: int | None = None,
    normalize: str = "per-image",
    fps: float = 5.0,
    scale: int = 4,
) -> None:
    """Save a list of image batches (each N, C, H, W) as an animated GIF of grids.

    The course shows its denoising animation at 5 frames per second, each frame min-max normalised
    per image and channel; both are the defaults here.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    images = [Image.fromarray(grid(to_uint8(f, normalize), nrow, scale=scale)) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
