"""Texture: patch SWD and the high-frequency ratio, what FID in classifier features misses.

FID sees *what* is drawn; these see *how crisply*. Images are (N, C, H, W) in [-1, 1].

Patch SWD (Karras et al. 2018, "Progressive growing of GANs", section 5 and appendix D, at the
finest level of their Laplacian pyramid): the sliced Wasserstein distance between random P x P
patches of two image sets, each patch minus its own mean colour, so that it compares local
structure (edges, outlines, dithering), not colours. Our choices:

- P = 5 (Karras use 7 at 16x16 and up; on 16x16 sprites 5 keeps 144 positions per image);
- `N_PATCHES` = 2^14 patches per set: every image gives the same k = ceil(2^14 / N) positions,
  drawn from a seeded generator and shared by both sets, so the measure is repeatable, both sets
  see the same places, and the patches do not depend on the order of the images;
- the descriptors are standardised per channel by the mean and std over the union of both sets
  (Karras standardise each set alone, which would hide a blur's lost contrast);
- `N_PROJECTIONS` = 512 random unit directions (Karras: 4 x 128); along each, W1 between the
  two sorted projections (matched by quantile when the sets differ in size), averaged;
- reported x 1e3, as Karras do: the mean distance is then in thousandths of a standard deviation.

Per class (`class_swd`), each class's images are compared with the real images of that class,
with `N_PATCHES` of their own (every position, for a class of few images), and `mix_weighted`
averages the classes by their share of the samples. Fewer images make a higher floor: compare a
class with its own floor.

Its floor is two halves of the real set (`minidiff.evaluation.metrics.evaluate`). How it
responds to blur and noise on real images: benchmarks/RESULTS.md, "Texture floors".

High-frequency ratio: mean |Laplacian| (the 3x3 five-point stencil, inside the image) of one
set over another's. Below 1: the first set is smoother; 1: as crisp.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from minidiff.utils.errors import MinidiffError

P = 5  # patch side, pixels
N_PATCHES = 2**14  # patches per image set, at least
N_PROJECTIONS = 512  # random directions of the slices
SWD_UNITS = 1e3  # Karras et al. report SWD x 1e3
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


# ---- Patch SWD ----


def patch_positions(height: int, width: int, k: int, seed: int) -> list[tuple[int, int]]:
    """k distinct top-left corners (y, x) of P x P patches inside a height x width image, seeded."""
    n_x = width - P + 1
    total = (height - P + 1) * n_x
    if total < 1:
        raise MinidiffError(f"patch SWD needs images of at least {P}x{P}, got {height}x{width}")
    g = torch.Generator().manual_seed(seed)
    return [divmod(int(i), n_x) for i in torch.randperm(total, generator=g)[:min(k, total)]]


def patches(images: torch.Tensor, positions: list[tuple[int, int]]) -> torch.Tensor:
    """(N * k, C, P, P) patches of every image at `positions`, each minus its own mean colour."""
    picked = torch.stack([images[:, :, y:y + P, x:x + P] for y, x in positions], 1)
    picked = picked.double().flatten(0, 1)  # (N, k, C, P, P) -> (N * k, C, P, P)
    return picked - picked.mean((2, 3), keepdim=True)  # Karras: compare structure, not colour


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = N_PROJECTIONS,
                       seed: int = 0) -> float:
    """Mean over random unit directions theta of W1(a . theta, b . theta), rows of a and b being
    descriptors (n_a, D), (n_b, D). Sorted projections are matched by quantile (n_a != n_b)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, projections), unit columns
    # (projections, n), sorted in float32: NumPy's vectorised float32 sort is ~10x its float64
    proj_a, proj_b = (np.sort((theta.T @ x.T).float().numpy(), axis=1) for x in (a, b))
    n = min(len(a), len(b))
    quantiles = (np.arange(n) + 0.5) / n
    proj_a = proj_a[:, (quantiles * len(a)).astype(np.int64)]  # the n quantiles of each side
    proj_b = proj_b[:, (quantiles * len(b)).astype(np.int64)]
    return float(np.abs(proj_a - proj_b, dtype=np.float64).mean())


def patch_swd(images_a: torch.Tensor, images_b: torch.Tensor, n_patches: int = N_PATCHES,
              n_projections: int = N_PROJECTIONS, seed: int = 0) -> float:
    """Patch SWD x 1e3 between two image sets (module docstring); 0 for identical sets."""
    if len(images_a) < 1 or len(images_b) < 1:
        raise MinidiffError("patch SWD needs at least one image in each set")
    if images_a.shape[1:] != images_b.shape[1:]:
        raise MinidiffError(f"patch SWD compares images of one shape, got "
                            f"{tuple(images_a.shape[1:])} and {tuple(images_b.shape[1:])}")
    k = math.ceil(n_patches / min(len(images_a), len(images_b)))
    positions = patch_positions(*images_a.shape[2:], k, seed)
    a, b = patches(images_a.cpu(), positions), patches(images_b.cpu(), positions)
    union = torch.cat([a, b])
    mean = union.mean((0, 2, 3), keepdim=True)
    std = union.std((0, 2, 3), keepdim=True).clamp_min(1e-8)  # per channel, over both sets
    a, b = ((x - mean) / std for x in (a, b))
    distance = sliced_wasserstein(a.flatten(1), b.flatten(1), n_projections, seed)
    return SWD_UNITS * distance


def class_swd(images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor,
              real_labels: torch.Tensor, classes: list[str], **kwargs) -> dict:
    """{class name: patch SWD of its images against the real images of that class}; None for a
    class with no image on either side."""
    labels, real_labels = torch.as_tensor(labels), torch.as_tensor(real_labels)
    names = classes or [f"class{i}" for i in range(int(max(labels.max(), real_labels.max())) + 1)]
    distances = {}
    for i, name in enumerate(names):
        mine, theirs = images[labels == i], real[real_labels == i]
        distances[name] = (patch_swd(mine, theirs, **kwargs)
                           if len(mine) and len(theirs) else None)
    return distances


def mix_weighted(per_class: dict, labels: torch.Tensor) -> float | None:
    """The mean of the per-class values (None skipped), each weighted by its share of `labels`."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=len(per_class)).double()
    pairs = [(v, counts[i]) for i, v in enumerate(per_class.values()) if v is not None]
    total = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / total) if pairs and total > 0 else None


def texture_measures(images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor,
                     real_labels: torch.Tensor, classes: list[str]) -> dict:
    """Patch SWD of `images` against `real`, overall and per class (with the mean over the
    classes, weighted by the class mix of `labels`), and the high-frequency ratio."""
    per_class = class_swd(images, labels, real, real_labels, classes)
    return {"swd": patch_swd(images, real), "swd_class": mix_weighted(per_class, labels),
            "swd_per_class": per_class, "hf_ratio": hf_ratio(images, real)}


# ---- High-frequency ratio ----


def mean_abs_laplacian(images: torch.Tensor) -> float:
    """Mean |Laplacian| over every channel and interior pixel of the images."""
    c = images.shape[1]
    kernel = LAPLACIAN.double().expand(c, 1, 3, 3)
    return float(F.conv2d(images.cpu().double(), kernel, groups=c).abs().mean())


def hf_ratio(images: torch.Tensor, real: torch.Tensor) -> float:
    """Mean |Laplacian| of `images` over that of `real`: below 1, smoother than real."""
    real_energy = mean_abs_laplacian(real)
    if real_energy == 0:
        raise MinidiffError("the high-frequency ratio needs real images that are not flat")
    return mean_abs_laplacian(images) / real_energy


# ---- Degradations the measures are checked against ----


def box_blur(images: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Each pixel the mean of the size x size block starting at it (edges repeated): same shape."""
    padded = F.pad(images, (0, size - 1, 0, size - 1), mode="replicate")
    return F.avg_pool2d(padded, size, stride=1)


def add_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Images plus N(0, sigma^2) noise (in [-1, 1] units), seeded, clipped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=g)).clamp(-1, 1)
