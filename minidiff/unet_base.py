"""What both networks share: the interface eps_theta(x_t, t / T, c) and its checks.

Notation (the glossary: `minidiff.reference`): x (B, C, H, W) is the noisy image x_t; t is the
normalised timestep t / T in [0, 1] (the course feeds the network t / 500 as a float); c
(B, n_cfeat) is the context, one-hot for a class or any real vector for a mix, and the zero vector
is the "null" context. A network returns eps_theta, its estimate of the true noise eps in
x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM, Ho et al. 2020, eq. 4), with x's
shape.

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

import torch
from torch import nn

from minidiff.unet_config import check_image_size
from minidiff.utils.errors import MinidiffError


class ContextUnet(nn.Module):
    """eps_theta(x, t, c): a U-Net conditioned on the normalised time t / T and a context c.

    The networks (`unet_course.CourseUnet`, `unet_minidiff.MinidiffUnet`) build their layers in
    `__init__` and compute `eps_theta` from checked inputs; `forward` checks them first.
    """

    arch = ""  # the name `build_unet` knows the network by

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16):
        super().__init__()
        _check_config(in_channels, n_feat, n_cfeat, height)
        self.in_channels, self.n_feat, self.n_cfeat, self.h = in_channels, n_feat, n_cfeat, height
        # the schedule's alpha_bar table, set by `predict_v`: then the layers output v
        self.register_buffer("alpha_bar", None, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None):
        """x (B, C, H, W), t (B,) or (B, 1, 1, 1) = t / T, c (B, n_cfeat) or None -> eps_theta."""
        t, c = self._check_inputs(x, t, c)
        if self.alpha_bar is None:
            return self.eps_theta(x, t, c)
        # v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022, sec. 4), and
        # with x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps that gives
        # eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v: every sampler still sees eps_theta.
        v_theta = self.eps_theta(x, t, c).to(x.dtype)  # the layers' output is v here
        T = len(self.alpha_bar) - 1
        alpha_bar_t = self.alpha_bar.double()[(t.double() * T).round().long()].reshape(-1, 1, 1, 1)
        return ((1 - alpha_bar_t).sqrt().to(x.dtype) * x + alpha_bar_t.sqrt().to(x.dtype) * v_theta)

    def predict_v(self, alpha_bar: torch.Tensor | None) -> None:
        """Make the layers predict v instead of eps (`forward` converts, with the schedule's
        alpha_bar_t, t = 0..T). A buffer, not a weight: state_dict keys stay the same."""
        if alpha_bar is None:
            raise MinidiffError("a v-prediction network needs its schedule's alpha_bar to "
                                "return eps_theta: build_unet(config, alpha_bar=...)")
        self.register_buffer("alpha_bar", alpha_bar.detach().double().clone(), persistent=False)

    def eps_theta(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The network itself, on t of shape (B,) and c of shape (B, n_cfeat) or None."""
        raise NotImplementedError

    def _check_inputs(self, x, t, c):
        expected = (self.in_channels, self.h, self.h)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise MinidiffError(f"x has shape {tuple(x.shape)}, expected (B, {expected[0]}, "
                                f"{expected[1]}, {expected[2]}); resize the images or rebuild the "
                                f"network with height={x.shape[-1]}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(len(x))
        if t.numel() != len(x):
            raise MinidiffError(f"t has {t.numel()} entries for {len(x)} images; pass one t / T "
                                f"per image, shape (B,) or (B, 1, 1, 1)")
        return t, self._check_context(x, c)

    def _check_context(self, x, c):
        if self.n_cfeat == 0:
            if c is not None:
                raise MinidiffError("this network is unconditional (n_cfeat=0); pass c=None")
            return None
        if c is None:
            return x.new_zeros(len(x), self.n_cfeat)  # the null context
        if tuple(c.shape) != (len(x), self.n_cfeat):
            raise MinidiffError(f"c has shape {tuple(c.shape)}, expected ({len(x)}, "
                                f"{self.n_cfeat}): one context vector per image")
        return c.to(x.dtype)


def _check_config(in_channels, n_feat, n_cfeat, height) -> None:
    check_image_size(height, "height")
    if n_feat < 8 or n_feat % 8:
        raise MinidiffError(f"n_feat={n_feat} must be a positive multiple of 8 (GroupNorm(8))")
    if in_channels < 1 or n_cfeat < 0:
        raise MinidiffError(f"in_channels={in_channels} must be >= 1 and n_cfeat={n_cfeat} >= 0")
