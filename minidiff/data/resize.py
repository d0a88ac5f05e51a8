"""Resizing arrays of images: pad to a square with white, then shrink by area averaging.

Non-square images are padded with white to a square (keeping the sprite's shape), then shrunk to
`image_size` by area averaging (a box filter: each output pixel is the mean of the input pixels
it covers, so thin pixel-art lines fade instead of vanishing or aliasing, as bilinear and nearest
would do). Only the built-in sprites may be enlarged (`enlarge`, by nearest neighbour), since
they are pixel art drawn at 16x16; other images smaller than `image_size` are an error.

Tutorial: tutorials/08_your_own_sprites.py.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from minidiff.utils.errors import MinidiffError

SHRINK_BYTES = 2**28  # resize arrays in chunks of about this many float32 bytes


def shrink(pixels: np.ndarray, image_size: int, what: str) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, S, S, 3): pad to square with white, then area-average down.

    Works through the images in chunks, so memory stays near SHRINK_BYTES whatever N."""
    n, h, w, _ = pixels.shape
    if max(h, w) < image_size:
        raise MinidiffError(f"{what} images are {h}x{w}, smaller than image_size={image_size}; "
                            f"use image_size={max(4, max(h, w) // 4 * 4)} or larger images")
    chunk = max(1, SHRINK_BYTES // (max(h, w) ** 2 * 3 * 4))
    if n > chunk:
        return np.concatenate([shrink(pixels[i:i + chunk], image_size, what)
                               for i in range(0, n, chunk)])
    pixels = np.array(pixels)  # a memory-mapped file read into memory, one chunk at a time
    if h != w:
        side = max(h, w)
        square = np.full((n, side, side, 3), 255, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[:, top : top + h, left : left + w] = pixels
        pixels, h = square, side
    if h == image_size:
        return pixels
    x = rearrange(torch.from_numpy(pixels), "n h w c -> n c h w").float()
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="area")
    return rearrange(x.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c").numpy()


def enlarge(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """The built-in 16x16 pixel art at another size: nearest neighbour up, area average down."""
    size = pixels.shape[1]
    if image_size > size and image_size % size == 0:
        factor = image_size // size
        return pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    if image_size > size:
        x = rearrange(torch.from_numpy(pixels), "n h w c -> n c h w")
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="nearest")
        return rearrange(x, "n c h w -> n h w c").numpy()
    return shrink(pixels, image_size, "built-in")
