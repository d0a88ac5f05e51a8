"""The course's network: the ContextUnet of DeepLearning.AI's "How Diffusion Models Work".

Descended from TeaPearce/Conditional_Diffusion_MNIST and cloneofsimo/minDiffusion: a U-Net
(Ronneberger et al. 2015) of BatchNorm residual blocks squeezed to a 1x1 vector, with the time and
context embedded by small MLPs and applied as `c_emb * h + t_emb` in the decoder. Module names
match the course's so its `state_dict` keys line up. One fix: see `ResidualConvBlock`.
`build_unet(UnetConfig(arch="course"))` builds it; notation in `minidiff/unet_base.py`.

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from minidiff.unet_base import ContextUnet


class ResidualConvBlock(nn.Module):
    """Two (Conv3x3, BatchNorm, GELU); with `is_res`, (shortcut(x) + h) / 1.414.

    Departure from the course: when the channel count changes, the course builds a fresh 1x1 conv
    inside `forward`, so that shortcut is untrained and random on every call. Here it is a
    registered module (`shortcut`), trained and saved like every other weight.
    """

    def __init__(self, in_channels: int, out_channels: int, is_res: bool = False):
        super().__init__()
        self.is_res = is_res
        self.conv1 = _conv_bn_gelu(in_channels, out_channels)
        self.conv2 = _conv_bn_gelu(out_channels, out_channels)
        same = in_channels == out_channels
        keep = same or not is_res
        self.shortcut = nn.Identity() if keep else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        return (self.shortcut(x) + h) / 1.414 if self.is_res else h


def _conv_bn_gelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1),
                         nn.BatchNorm2d(out_channels), nn.GELU())


class UnetDown(nn.Module):
    """Two residual blocks, then MaxPool(2): (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.model = nn.Sequential(ResidualConvBlock(in_channels, out_channels),
                                   ResidualConvBlock(out_channels, out_channels), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetUp(nn.Module):
    """cat(x, skip), ConvTranspose(2, 2), two residual blocks: (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
                                   ResidualConvBlock(out_channels, out_channels),
                                   ResidualConvBlock(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat((x, skip), 1))


class EmbedFC(nn.Module):
    """Linear, GELU, Linear: (B, input_dim) -> (B, emb_dim, 1, 1), ready to broadcast."""

    def __init__(self, input_dim: int, emb_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.model = nn.Sequential(nn.Linear(input_dim, emb_dim), nn.GELU(),
                                   nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.model(x), "b e -> b e 1 1")


class CourseUnet(ContextUnet):
    """The course's eps_theta(x, t, c), 1,481,027 parameters at n_feat=64, n_cfeat=5."""

    arch = "course"

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16):
        super().__init__(in_channels, n_feat, n_cfeat, height)
        n, h = self.n_feat, self.h
        self.init_conv = ResidualConvBlock(self.in_channels, n, is_res=True)
        self.down1 = UnetDown(n, n)  # (B, n, h/2, h/2)
        self.down2 = UnetDown(n, 2 * n)  # (B, 2n, h/4, h/4)
        # The course pools with AvgPool(4), which is h/4 only at h = 16; h/4 keeps 1x1 for any h.
        self.to_vec = nn.Sequential(nn.AvgPool2d(h // 4), nn.GELU())  # (B, 2n, 1, 1)
        self.timeembed1, self.timeembed2 = EmbedFC(1, 2 * n), EmbedFC(1, n)
        if self.n_cfeat:
            self.contextembed1 = EmbedFC(self.n_cfeat, 2 * n)
            self.contextembed2 = EmbedFC(self.n_cfeat, n)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * n, 2 * n, h // 4, h // 4),
                                 nn.GroupNorm(8, 2 * n), nn.ReLU())  # (B, 2n, h/4, h/4)
        self.up1 = UnetUp(4 * n, n)  # (B, n, h/2, h/2)
        self.up2 = UnetUp(2 * n, n)  # (B, n, h, h)
        self.out = nn.Sequential(nn.Conv2d(2 * n, n, 3, 1, 1), nn.GroupNorm(8, n), nn.ReLU(),
                                 nn.Conv2d(n, self.in_channels, 3, 1, 1))

    def eps_theta(self, x, t, c):
        """Encoder, 1x1 bottleneck, decoder where time and context enter as c_emb * h + t_emb."""
        n = self.n_feat
        x = self.init_conv(x)  # (B, n, h, h)
        down1 = self.down1(x)
        down2 = self.down2(down1)
        hiddenvec = self.to_vec(down2)  # (B, 2n, 1, 1)
        temb1, temb2 = self.timeembed1(t[:, None]), self.timeembed2(t[:, None])
        if self.n_cfeat:
            cemb1, cemb2 = self.contextembed1(c), self.contextembed2(c)
        else:  # unconditional: no context to multiply by
            cemb1, cemb2 = x.new_ones(len(x), 2 * n, 1, 1), x.new_ones(len(x), n, 1, 1)
        up1 = self.up0(hiddenvec)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        return self.out(torch.cat((up3, x), 1))
