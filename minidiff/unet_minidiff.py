"""minidiff's network, the default: the course's U-Net idea, about 5x cheaper and steadier on a CPU.

It reads 2x2 pixel patches as channels (space-to-depth, the "patchify" of ViT and DiT, Peebles &
Xie 2023), so its finest level is h/2 and the costly full-resolution convolutions disappear
(`patch=1` keeps them: levels h and h/2, four times the convolution cost at the same n_feat); one
residual block per level instead of two, plus a middle block at h/4 instead of the 1x1 vector;
GroupNorm instead of BatchNorm (batch statistics differ between training batches, EMA weights and
guidance's doubled batches; GroupNorm has none); sinusoidal time features (Vaswani et al. 2017, as
in DDPM); and time plus context embeddings applied as a per-block scale and shift (FiLM, as in
Dhariwal & Nichol 2021) at every level rather than only in the decoder.
`build_unet(UnetConfig(arch="minidiff"))` builds it; notation in `minidiff/unet_base.py`.

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from minidiff.unet_base import ContextUnet
from minidiff.unet_config import PATCHES
from minidiff.utils.errors import MinidiffError


class ResBlock(nn.Module):
    """GroupNorm, SiLU, Conv3x3, scale-shift by the embedding, GroupNorm, SiLU, dropout, Conv3x3,
    + skip (DDPM's residual block, with its dropout before the second convolution)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = rearrange(self.film(emb), "b (two c) -> two b c 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(nn.functional.silu(h)))
        return self.skip(x) + h


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position features of t * 1000 (Vaswani et al. 2017; DDPM's time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t[:, None] * freqs[None]  # (B, half)
    return torch.cat((angles.sin(), angles.cos()), dim=1)  # (B, dim)


class MinidiffUnet(ContextUnet):
    """minidiff's eps_theta(x, t, c), 1,663,628 parameters at n_feat=64, n_cfeat=5."""

    arch = "minidiff"

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16,
                 patch: int = 2, dropout: float = 0.0):
        super().__init__(in_channels, n_feat, n_cfeat, height)
        if patch not in PATCHES:
            raise MinidiffError(f"patch={patch} must be one of {', '.join(map(str, PATCHES))} (the "
                                "image side is halved twice after the patches)")
        if not 0 <= dropout < 1:
            raise MinidiffError(f"dropout={dropout} must be in [0, 1)")
        self.p = patch
        n, emb, c4 = self.n_feat, 4 * self.n_feat, patch * patch * self.in_channels
        self.time_mlp = nn.Sequential(nn.Linear(n, emb), nn.SiLU(), nn.Linear(emb, emb))
        if self.n_cfeat:
            self.context_mlp = nn.Sequential(nn.Linear(self.n_cfeat, emb), nn.SiLU(),
                                             nn.Linear(emb, emb))
        # Shapes for patch p = 2 (p = 1: h and h/2 where these say h/2 and h/4).
        self.init_conv = nn.Conv2d(c4, n, 3, padding=1)  # on 2x2 patches: (B, n, h/2, h/2)
        self.down1 = ResBlock(n, n, emb, dropout)  # (B, n, h/2, h/2), then pooled to h/4
        self.down2 = ResBlock(n, 2 * n, emb, dropout)  # (B, 2n, h/4, h/4)
        self.mid = ResBlock(2 * n, 2 * n, emb, dropout)  # (B, 2n, h/4, h/4)
        self.up1 = ResBlock(4 * n, 2 * n, emb, dropout)  # cat(mid, down2) -> (B, 2n, h/4, h/4)
        self.up2 = ResBlock(3 * n, n, emb, dropout)  # cat(up1 upsampled, down1): (B, n, h/2, h/2)
        self.out = nn.Sequential(nn.GroupNorm(8, n), nn.SiLU(), nn.Conv2d(n, c4, 3, padding=1))

    def eps_theta(self, x, t, c):
        """2x2 patches in, two levels with a middle block, FiLM by time + context everywhere."""
        emb = self.time_mlp(sinusoidal(t, self.n_feat))  # (B, 4n)
        if self.n_cfeat:
            emb = emb + self.context_mlp(c)
        x = rearrange(x, "b c (h p) (w q) -> b (c p q) h w", p=self.p, q=self.p)  # patches as channels
        h1 = self.down1(self.init_conv(x), emb)  # (B, n, h/2, h/2)
        h2 = self.down2(nn.functional.avg_pool2d(h1, 2), emb)  # (B, 2n, h/4, h/4)
        h = self.up1(torch.cat((self.mid(h2, emb), h2), 1), emb)  # (B, 2n, h/4, h/4)
        h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, 2n, h/2, h/2)
        h = self.out(self.up2(torch.cat((h, h1), 1), emb))  # (B, 4C, h/2, h/2)
        return rearrange(h, "b (c p q) h w -> b c (h p) (w q)", p=self.p, q=self.p)  # (B, C, h, h)
