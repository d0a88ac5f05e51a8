"""What a network is, without torch: the arch names, `UnetConfig`, and the image size rule.

The networks themselves (`minidiff/unet.py` and the files it names) need torch; the training
config (`minidiff/training/config.py`) and the data loaders must not load it just to check an
`--arch` or an `--image-size`. So the rules live here, in a file that imports no torch, and every
one of them asks this file: `unet.py` and `unet_base.py` (the networks), `training/config.py`
(the flags), `data/datasets.py` (the images).

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

from minidiff.utils.errors import MinidiffError

ARCHS = ("minidiff", "course")  # the networks `minidiff.unet.build_unet` builds, default first
IMAGE_SIZE_STEP = 4  # the U-Net halves the image twice, so its side is a multiple of 4


@dataclass
class UnetConfig:
    arch: str = "minidiff"  # "course" (the course's network) or "minidiff" (faster on a CPU)
    in_channels: int = 3  # image channels (RGB)
    n_feat: int = 64  # channels at full resolution; 2 * n_feat at the coarser levels
    n_cfeat: int = 5  # context size: the number of classes; 0 for an unconditional model
    height: int = 16  # image height = width, divisible by 4 (two 2x poolings)
    patch: int = 2  # "minidiff" reads patch x patch pixel blocks as channels: 2 (cheap) or 1 (full res)
    dropout: float = 0.0  # "minidiff": dropout inside each residual block (DDPM used 0.1 on CIFAR-10)
    prediction: str = "eps"  # what the layers output: eps, or v (forward turns v into eps_theta)


PREDICTIONS = ("eps", "v")  # the network's target: the noise (DDPM), or v (Salimans & Ho 2022)
PATCHES = (1, 2)  # the minidiff network's patch sides: full resolution, or 2x2 blocks as channels


def check_image_size(size, name: str = "image_size") -> None:
    """An image side the U-Net can halve twice (a positive multiple of 4); else a one-line
    MinidiffError naming `name`."""
    whole = isinstance(size, Integral) and not isinstance(size, bool)  # numpy's integers too
    if not whole or size < IMAGE_SIZE_STEP or size % IMAGE_SIZE_STEP:
        raise MinidiffError(f"{name}={size} must be a positive multiple of {IMAGE_SIZE_STEP} (the "
                            "U-Net halves it twice); resize the images to e.g. 16 or 32")
