"""The bounds on untrusted input: how large an image, how many classes, how much memory.

Every size is checked before anything that large is allocated. A `.npy` header must describe
exactly the bytes the file holds (`minidiff.data.npy`); an image's size is read from its header
before it is decoded (`minidiff.data.folders`: at most `MAX_IMAGE_SIDE` pixels a side); at most
`MAX_CLASSES` classes; the float32 images of one dataset at most `MAX_DATASET_BYTES`, checked
from the count and `image_size` before loading (`check_memory`); and the side the images are
resized to a multiple of `IMAGE_SIZE_STEP` up to `MAX_IMAGE_SIZE` (`check_image_size`: the U-Net
halves it twice).

Tutorial: tutorials/08_your_own_sprites.py.
"""

from __future__ import annotations

from numbers import Integral

from minidiff.utils.errors import MinidiffError

MAX_IMAGE_SIDE = 4096  # pixels on the longer side of an image file (padded square: 64 MiB RGBA)
MAX_CLASSES = 1000  # classes one dataset may have (a context input of the network each)
MAX_DATASET_BYTES = 8 * 2**30  # the float32 images (N, 3, S, S) a dataset holds in memory
IMAGE_SIZE_STEP = 4  # the U-Net halves the image twice, so its side is a multiple of 4
MAX_IMAGE_SIZE = 128  # pixels: a sprite network; 20,000 images of 128 px already take 4 GB


def check_image_size(size, name: str = "image_size") -> None:
    """An image side the U-Net can halve twice (a positive multiple of 4); else a one-line
    MinidiffError naming `name`."""
    whole = isinstance(size, Integral) and not isinstance(size, bool)  # numpy's integers too
    if not whole or size < IMAGE_SIZE_STEP or size % IMAGE_SIZE_STEP:
        raise MinidiffError(f"{name}={size} must be a positive multiple of {IMAGE_SIZE_STEP} (the "
                            "U-Net halves it twice); resize the images to e.g. 16 or 32")


def check_memory(count: int, image_size: int, what: str) -> None:
    """Refuse a dataset whose float32 images would not fit in MAX_DATASET_BYTES."""
    need = count * 3 * image_size**2 * 4
    if need > MAX_DATASET_BYTES:
        raise MinidiffError(f"{count} images of {image_size}x{image_size} from {what} need "
                            f"{need / 2**30:.1f} GiB as float32, over the "
                            f"{MAX_DATASET_BYTES // 2**30} GiB a dataset may hold; pass a smaller "
                            f"n (--n-images) or image_size")
