"""The noise predictor eps_theta(x_t, t / T, c): two networks behind one config.

- "course" (`minidiff/unet_course.py`, `CourseUnet`): the course's ContextUnet, module for module,
  so its `state_dict` keys line up, with one fix (a trained shortcut).
- "minidiff" (`minidiff/unet_minidiff.py`, `MinidiffUnet`, the default): the same U-Net idea made
  about 5x cheaper and steadier on a CPU.

Both are a `ContextUnet` (`minidiff/unet_base.py`: the interface, its notation and its checks),
built by `build_unet(UnetConfig(...))`. What each costs and learns per CPU-second:
benchmarks/RESULTS.md, "Networks".

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from minidiff.unet_base import ContextUnet
from minidiff.unet_course import CourseUnet
from minidiff.unet_minidiff import MinidiffUnet
from minidiff.utils.errors import MinidiffError

__all__ = ["ARCHS", "NETWORKS", "ContextUnet", "CourseUnet", "MinidiffUnet", "UnetConfig",
           "build_unet"]

NETWORKS = {"course": CourseUnet, "minidiff": MinidiffUnet}  # arch name -> network class
ARCHS = tuple(NETWORKS)


@dataclass
class UnetConfig:
    arch: str = "minidiff"  # "course" (the course's network) or "minidiff" (faster on a CPU)
    in_channels: int = 3  # image channels (RGB)
    n_feat: int = 64  # channels at full resolution; 2 * n_feat at the coarser levels
    n_cfeat: int = 5  # context size: the number of classes; 0 for an unconditional model
    height: int = 16  # image height = width, divisible by 4 (two 2x poolings)


def build_unet(config: UnetConfig) -> ContextUnet:
    """The network `config.arch` names, of the config's size."""
    if config.arch not in NETWORKS:
        raise MinidiffError(f"arch={config.arch!r} is not one of {', '.join(ARCHS)}")
    return NETWORKS[config.arch](in_channels=config.in_channels, n_feat=config.n_feat,
                                 n_cfeat=config.n_cfeat, height=config.height)
