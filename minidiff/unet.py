"""The noise predictor eps_theta(x_t, t / T, c): two networks behind one config.

- "course" (`minidiff/unet_course.py`, `CourseUnet`): the course's ContextUnet, module for module,
  so its `state_dict` keys line up, with one fix (a trained shortcut).
- "minidiff" (`minidiff/unet_minidiff.py`, `MinidiffUnet`, the default): the same U-Net idea made
  about 5x cheaper and steadier on a CPU.

Both are a `ContextUnet` (`minidiff/unet_base.py`: the interface, its notation and its checks),
built by `build_unet(UnetConfig(...))`; `minidiff/unet_config.py` holds the config, the arch
names and the image size rule without torch. What each costs and learns per CPU-second:
benchmarks/RESULTS.md, "Networks".

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

import torch

from minidiff.unet_base import ContextUnet
from minidiff.unet_config import ARCHS, PREDICTIONS, UnetConfig
from minidiff.unet_course import CourseUnet
from minidiff.unet_minidiff import MinidiffUnet
from minidiff.utils.errors import MinidiffError

__all__ = ["ARCHS", "NETWORKS", "PREDICTIONS", "ContextUnet", "CourseUnet", "MinidiffUnet",
           "UnetConfig", "build_unet"]

# arch name -> network class, in ARCHS's order. ARCHS and UnetConfig live in the torch-free
# `minidiff/unet_config.py`, so that the training config can check --arch without loading torch.
NETWORKS = {net.arch: net for net in (MinidiffUnet, CourseUnet)}


def build_unet(config: UnetConfig, alpha_bar: torch.Tensor | None = None) -> ContextUnet:
    """The network `config.arch` names, of the config's size. A v-prediction network
    (`config.prediction="v"`) needs the schedule's alpha_bar table to return eps_theta."""
    if config.arch not in NETWORKS:
        raise MinidiffError(f"arch={config.arch!r} is not one of {', '.join(ARCHS)}")
    if config.prediction not in PREDICTIONS:
        raise MinidiffError(f"prediction={config.prediction!r} is not one of "
                            f"{', '.join(PREDICTIONS)}")
    net = _build(config)
    if config.prediction == "v":
        net.predict_v(alpha_bar)
    return net


def _build(config: UnetConfig) -> ContextUnet:
    sizes = dict(in_channels=config.in_channels, n_feat=config.n_feat, n_cfeat=config.n_cfeat,
                 height=config.height)
    if config.arch == "course":  # the course's network, exactly: no patches, no dropout
        if (config.patch, config.dropout) != (UnetConfig.patch, UnetConfig.dropout):
            raise MinidiffError(f"patch={config.patch} and dropout={config.dropout} are settings "
                                "of the minidiff network; the course's has neither (drop them, "
                                "or pass --arch minidiff)")
        return CourseUnet(**sizes)
    return MinidiffUnet(**sizes, patch=config.patch, dropout=config.dropout)
