"""Reading a folder of images: PNG, JPEG or GIF files, one subfolder per class or none.

No subfolders: the images are unlabelled. Class subfolders are ordered naturally (`natural_key`):
`1`, `2`, `10` (not `1`, `10`, `2`), so a class's number is its index. Transparency is composited
on white, as the course's sprites are drawn; a non-square image is padded with white to a square
and shrunk to `image_size` by area averaging (Pillow's box filter, as `minidiff.data.resize`).
Images smaller than `image_size` are an error. An image's size is read from its header before it
is decoded, so a file claiming a huge size is refused unread (`minidiff.data.limits`).

Tutorial: tutorials/08_your_own_sprites.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from minidiff.data.limits import MAX_CLASSES, MAX_IMAGE_SIDE, check_memory
from minidiff.utils.errors import MinidiffError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def load_folder(path: Path, image_size: int):
    """uint8 (N, S, S, 3) images, float32 one-hot labels (N, K) or (N, 0), and the class names."""
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    folders = sorted((d for d in path.iterdir() if d.is_dir() and _images_in(d)),
                     key=lambda d: natural_key(d.name))
    if files and folders:
        raise MinidiffError(f"{str(path)!r} holds both images and class subfolders; move the "
                            f"loose images into a subfolder")
    if not files and not folders:
        raise MinidiffError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r} or its "
                            f"subfolders; point data at a folder of images")
    if len(folders) > MAX_CLASSES:
        raise MinidiffError(f"{str(path)!r} holds {len(folders)} class subfolders, over "
                            f"{MAX_CLASSES}; group the images into fewer classes")
    check_memory(len(files) or sum(len(_images_in(d)) for d in folders), image_size, path.name)
    if files:
        pixels = np.stack([_read_image(f, image_size) for f in files])
        return pixels, np.zeros((len(pixels), 0), np.float32), []
    per_class = [[_read_image(f, image_size) for f in _images_in(d)] for d in folders]
    index = np.concatenate([np.full(len(p), k) for k, p in enumerate(per_class)])
    pixels = np.stack([image for group in per_class for image in group])
    return pixels, np.eye(len(folders), dtype=np.float32)[index], [d.name for d in folders]


def natural_key(name: str) -> tuple:
    """Sort key that reads digit runs as numbers: "2" < "10", "item9" < "item10"."""
    parts = re.split(r"(\d+)", name)  # text at even places, digits at odd ones: never mixed
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size, 3): on white, padded square, box-shrunk."""
    try:
        with Image.open(file) as image:  # reads the header only: the size, not the pixels
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise MinidiffError(f"{file.name} is {width}x{height}, over {MAX_IMAGE_SIDE} "
                                    f"pixels on a side; shrink it first (sprites are small)")
            rgba = image.convert("RGBA")  # a GIF gives its first frame
    except Image.DecompressionBombError as error:  # a header claiming over Pillow's limit
        claimed = re.search(r"\d+ pixels", str(error))
        raise MinidiffError(f"{file.name} claims {claimed[0] if claimed else 'more pixels'}, "
                            f"over Pillow's decompression-bomb limit; remove it or shrink it "
                            f"first (sprites are small)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
        raise MinidiffError(f"cannot read image {str(file)!r} ({type(error).__name__}); remove "
                            f"it or convert it to PNG") from None
    side = max(rgba.size)
    if side < image_size:
        raise MinidiffError(f"{file.name} is {rgba.size[0]}x{rgba.size[1]}, smaller than "
                            f"image_size={image_size}; use a smaller image_size or larger images")
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(rgba, ((side - rgba.size[0]) // 2, (side - rgba.size[1]) // 2))
    rgb = square.convert("RGB")
    if side != image_size:
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(rgb, np.uint8)
