"""The network: a U-Net that predicts, from a noisy image x_t, its timestep and a context c,
either the noise eps_theta (DDPM, the course) or v_theta (Salimans & Ho 2022).

Notation (the glossary: `minidiff.reference`): x (B, C, H, W) is the noisy image x_t; t is the
normalised timestep t / T in [0, 1] (the course feeds the network t / 500 as a float); c
(B, n_cfeat) is the context, one-hot for a class or any real vector for a mix, and the zero vector
is the "null" context. A network returns its prediction with x's shape; `prediction` says which,
and the samplers and the loss turn v into eps with `minidiff.noising.eps_from_v`.

Two networks, chosen by `UnetConfig.arch`:
- "minidiff" (`MinidiffUnet`, here, the default): the course's U-Net idea on 2x2 patches, with
  GroupNorm and FiLM conditioning, about 5x cheaper on a CPU (benchmarks/RESULTS.md, Networks).
- "course" (`ContextUnet`, below it): the course's ContextUnet by its course name, module for
  module, so that its `state_dict` keys line up, with one fix (a trained shortcut).

Tutorial: tutorials/03_unet.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from minidiff.data.limits import IMAGE_SIZE_STEP, MAX_IMAGE_SIZE, check_image_size
from minidiff.utils.errors import MinidiffError

__all__ = ["ARCHS", "IMAGE_SIZE_STEP", "MAX_IMAGE_SIZE", "MAX_PIXEL_FEAT", "PATCHES", "PREDICTIONS",
           "ContextUnet", "MinidiffUnet", "UnetBase", "UnetConfig", "build_unet",
           "check_image_size"]

ARCHS = ("minidiff", "course")  # the networks `build_unet` builds, default first
PREDICTIONS = ("eps", "v")  # the network's target: the noise (DDPM), or v (Salimans & Ho 2022)
PATCHES = (1, 2)  # the minidiff network's patch sides: full resolution, or 2x2 blocks as channels
MAX_PIXEL_FEAT = 64  # the widest full-resolution head `pixel_feat` may ask for


@dataclass
class UnetConfig:
    arch: str = "minidiff"  # "minidiff" (faster on a CPU) or "course" (the course's network)
    in_channels: int = 3  # image channels (RGB)
    n_feat: int = 64  # channels at full resolution; 2 * n_feat at the coarser levels
    n_cfeat: int = 5  # context size: the number of classes; 0 for an unconditional model
    height: int = 16  # image height = width, divisible by 4 (two 2x poolings)
    patch: int = 2  # "minidiff" reads patch x patch pixel blocks as channels: 2 (cheap) or 1
    dropout: float = 0.0  # "minidiff": dropout inside each residual block (DDPM: 0.1 on CIFAR-10)
    pixel_feat: int = 0  # "minidiff", patch 2: channels of a full-resolution head; 0 none
    prediction: str = "eps"  # what the network outputs: eps_theta, or v_theta


def build_unet(config: UnetConfig) -> UnetBase:
    """The network `config.arch` names, of the config's size, predicting `config.prediction`."""
    if config.arch not in ARCHS:
        raise MinidiffError(f"arch={config.arch!r} is not one of {', '.join(ARCHS)}")
    if config.prediction not in PREDICTIONS:
        raise MinidiffError(f"prediction={config.prediction!r} is not one of "
                            f"{', '.join(PREDICTIONS)}")
    sizes = dict(in_channels=config.in_channels, n_feat=config.n_feat, n_cfeat=config.n_cfeat,
                 height=config.height, prediction=config.prediction)
    if config.arch == "minidiff":
        return MinidiffUnet(**sizes, patch=config.patch, dropout=config.dropout,
                            pixel_feat=config.pixel_feat)
    mine = (config.patch, config.dropout, config.pixel_feat)
    if mine != (UnetConfig.patch, UnetConfig.dropout, UnetConfig.pixel_feat):
        raise MinidiffError(f"patch={config.patch}, dropout={config.dropout} and pixel_feat="
                            f"{config.pixel_feat} are settings of the minidiff network; the "
                            "course's has none of them (drop them, or pass --arch minidiff)")
    return ContextUnet(**sizes)


class UnetBase(nn.Module):
    """What both networks share: their sizes, what they predict, and the checks of their inputs.
    Each network's `forward(x, t, c)` calls `check_inputs` first, then runs its layers."""

    arch = ""  # the name `build_unet` knows the network by

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16,
                 prediction: str = "eps"):
        super().__init__()
        check_image_size(height, "height")
        if n_feat < 8 or n_feat % 8:
            raise MinidiffError(f"n_feat={n_feat} must be a positive multiple of 8 (GroupNorm(8))")
        if in_channels < 1 or n_cfeat < 0:
            raise MinidiffError(f"in_channels={in_channels} must be >= 1 and n_cfeat={n_cfeat} "
                                ">= 0")
        if prediction not in PREDICTIONS:
            raise MinidiffError(f"prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}")
        self.in_channels, self.n_feat, self.n_cfeat, self.h = in_channels, n_feat, n_cfeat, height
        self.prediction = prediction

    def check_inputs(self, x, t, c):
        """(t as (B,) in x's dtype, c as (B, n_cfeat) or None), or a one-line MinidiffError. c=None
        on a conditional network is the null context, zeros."""
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
        if self.n_cfeat == 0:
            if c is not None:
                raise MinidiffError("this network is unconditional (n_cfeat=0); pass c=None")
            return t, None
        if c is None:
            return t, x.new_zeros(len(x), self.n_cfeat)  # the null context
        if tuple(c.shape) != (len(x), self.n_cfeat):
            raise MinidiffError(f"c has shape {tuple(c.shape)}, expected ({len(x)}, "
                                f"{self.n_cfeat}): one context vector per image")
        return t, c.to(x.dtype)


# minidiff's network. It reads 2x2 pixel patches as channels (space-to-depth, the "patchify" of
# ViT and DiT, Peebles & Xie 2023), so its finest level is h/2 (`patch=1` keeps levels h and h/2,
# four times the convolution cost); one residual block per level plus a middle block at h/4;
# GroupNorm, which keeps no batch statistics to go stale between training batches, EMA weights and
# guidance's doubled batches; sinusoidal time features (as DDPM); and time plus context applied as
# a per-block scale and shift (FiLM, as in Dhariwal & Nichol 2021) at every level.
# `pixel_feat=m` adds a full-resolution head (issue 23; pixel shuffle then a convolution, as in
# Shi et al. 2016): the last convolution writes m features per pixel instead of the pixels
# themselves, they are unfolded to (m, h, h), concatenated with x_t (the U-Net's skip, one level
# up, at the price of no stem), and two 3x3 convolutions at h draw each pixel from its neighbours'
# features and x_t's own, instead of four pixels at a time from one 2x2 patch. A full-resolution
# stem and head of residual blocks cost 2.3x the step on this CPU; this head, 1.2x at m = 16.


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


class MinidiffUnet(UnetBase):
    """minidiff's network, 1,663,628 parameters at n_feat=64, n_cfeat=5."""

    arch = "minidiff"

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16,
                 prediction: str = "eps", patch: int = 2, dropout: float = 0.0,
                 pixel_feat: int = 0):
        super().__init__(in_channels, n_feat, n_cfeat, height, prediction)
        if patch not in PATCHES:
            raise MinidiffError(f"patch={patch} must be one of {', '.join(map(str, PATCHES))} (the "
                                "image side is halved twice after the patches)")
        if not 0 <= dropout < 1:
            raise MinidiffError(f"dropout={dropout} must be in [0, 1)")
        if pixel_feat and (patch != 2 or pixel_feat % 8 or pixel_feat > MAX_PIXEL_FEAT):
            raise MinidiffError(f"pixel_feat={pixel_feat} must be 0 or a multiple of 8 up to "
                                f"{MAX_PIXEL_FEAT}, on 2x2 patches (patch=2); patch=1 is full "
                                "resolution already")
        self.p, self.m = patch, pixel_feat
        n, emb, m = self.n_feat, 4 * self.n_feat, pixel_feat
        c4 = patch * patch * self.in_channels  # the pixels of one patch, as channels
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
        c_out = patch * patch * m if m else c4  # m features per pixel for the head, or pixels
        self.out = nn.Sequential(nn.GroupNorm(8, n), nn.SiLU(), nn.Conv2d(n, c_out, 3, padding=1))
        if m:  # the full-resolution head: cat(unfolded features, x_t) -> (B, C, h, h)
            self.pixel_out = nn.Sequential(
                nn.Conv2d(m + self.in_channels, m, 3, padding=1), nn.SiLU(),
                nn.Conv2d(m, self.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t, c: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t = t / T (B,), c (B, n_cfeat) or None -> eps_theta or v_theta."""
        t, c = self.check_inputs(x, t, c)
        emb = self.time_mlp(sinusoidal(t, self.n_feat))  # (B, 4n)
        if self.n_cfeat:
            emb = emb + self.context_mlp(c)
        patches = rearrange(x, "b c (h p) (w q) -> b (c p q) h w", p=self.p, q=self.p)
        h1 = self.down1(self.init_conv(patches), emb)  # (B, n, h/2, h/2)
        h2 = self.down2(nn.functional.avg_pool2d(h1, 2), emb)  # (B, 2n, h/4, h/4)
        h = self.up1(torch.cat((self.mid(h2, emb), h2), 1), emb)  # (B, 2n, h/4, h/4)
        h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, 2n, h/2, h/2)
        h = self.out(self.up2(torch.cat((h, h1), 1), emb))  # (B, 4C or 4m, h/2, h/2)
        h = rearrange(h, "b (c p q) h w -> b c (h p) (w q)", p=self.p, q=self.p)  # (B, C|m, h, h)
        if self.m:
            h = self.pixel_out(torch.cat((h, x), 1))  # (B, C, h, h)
        return h

# The course's network: the ContextUnet of DeepLearning.AI's "How Diffusion Models Work", descended
# from TeaPearce/Conditional_Diffusion_MNIST and cloneofsimo/minDiffusion: a U-Net (Ronneberger et
# al. 2015) of BatchNorm residual blocks squeezed to a 1x1 vector, with the time and context
# embedded by small MLPs and applied as `c_emb * h + t_emb` in the decoder. Module names match the
# course's so its `state_dict` keys line up. One fix: see `ResidualConvBlock`.


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


class ContextUnet(UnetBase):
    """The course's network by its course name, 1,481,027 parameters at n_feat=64, n_cfeat=5."""

    arch = "course"

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16,
                 prediction: str = "eps"):
        super().__init__(in_channels, n_feat, n_cfeat, height, prediction)
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

    def forward(self, x: torch.Tensor, t, c: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder, 1x1 bottleneck, decoder where time and context enter as c_emb * h + t_emb:
        x (B, C, H, W), t = t / T (B,), c (B, n_cfeat) or None (the null context) -> eps_theta
        (v_theta if built to predict v)."""
        t, c = self.check_inputs(x, t, c)
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
