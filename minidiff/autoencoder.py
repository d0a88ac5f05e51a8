"""A small KL autoencoder: the first stage of latent diffusion (Rombach et al. 2022, "High-
Resolution Image Synthesis with Latent Diffusion Models", section 3.1 and appendix G).

Notation: x (B, C, H, W) an image in [-1, 1]; the encoder E gives the mean and log-variance of a
diagonal Gaussian q(z | x) over latents z (B, c, H / f, W / f), f = `factor`, c =
`latent_channels`; the decoder D maps a latent back to an image.

    mean, logvar = E(x)
    z = mean + exp(logvar / 2) * eps,   eps ~ N(0, I)        (the reparameterisation trick)
    loss = |x - D(z)| + kl_weight * KL(q(z | x) || N(0, I))  (paper eq. (25), without its
                                                              perceptual and GAN terms)

Departures from the paper, on purpose: no perceptual (LPIPS) or adversarial loss, since nothing
may be downloaded at run time and a 32 px sprite has little texture for them to restore; the
reconstruction term is a mean over pixels and the KL a mean over latent elements (the paper sums
both), so the default kl_weight of 1e-6 means another balance than the paper's 1e-6.

The scale factor: the diffusion model expects data of about unit variance, as the pixels in
[-1, 1] roughly are. The latents are not, so, as the paper does (section 4.3.2), the trainer
estimates 1 / std of the training latents after training (`estimate_scale`) and stores it in the
weights (the `scale_factor` buffer): the diffusion model trains on `scale_factor * mean` and its
samples are decoded as D(z / scale_factor) (`encode_latents`, `decode_latents`).

The recipe's defaults were chosen by held-out PSNR at equal CPU time (benchmarks/RESULTS.md,
"Latent against pixel diffusion"). A trained autoencoder run is read back by `load_autoencoder`,
and a diffusion run trained on its latents is tied to it by `Latents.record` (its fingerprint):
`autoencoder_of` finds it again for `minidiff.load`, `sample` and `eval`.

Tutorial: tutorials/09_latent_diffusion.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minidiff.checkpoint import (
    CHECKPOINT_NAME,
    check_plain,
    check_weights,
    load_checkpoint,
    malformed,
    mismatch,
    resolve_checkpoint,
)
from minidiff.data.datasets import Dataset
from minidiff.utils.errors import MinidiffError

AUTOENCODER_KIND = "autoencoder"  # the `kind` of its checkpoint (minidiff.checkpoint)
NETWORK_FIELDS = ("factor", "latent_channels", "n_feat")  # with in_channels: the network
LOGVAR_RANGE = (-30.0, 20.0)  # the paper's clamp: exp() stays finite in float32


class ResBlock(nn.Module):
    """GroupNorm, SiLU, Conv3x3, twice, plus the input (the paper's ResnetBlock without time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def widths(n_feat: int, levels: int) -> list[int]:
    """Channels at each resolution, full first: doubled at each halving, at most 4 n_feat."""
    return [min(n_feat * 2**i, 4 * n_feat) for i in range(levels + 1)]


class Autoencoder(nn.Module):
    """E and D of the module docstring; log2(factor) halvings of the image, the first by reading
    2x2 pixel patches as channels (space-to-depth, as `minidiff/unet.py` does), which spares
    every full-resolution convolution (5x cheaper per step at the same width); the decoder's last
    convolution writes the 2x2 patches back (depth-to-space, Shi et al. 2016)."""

    def __init__(self, *, in_channels: int = 3, factor: int = 4, latent_channels: int = 4,
                 n_feat: int = 32):
        super().__init__()
        levels = int(math.log2(factor))
        if 2**levels != factor or levels < 1:
            raise ValueError(f"factor={factor} is not a power of 2 above 1")
        w = widths(n_feat, levels - 1)  # the first halving is the 2x2 patches
        self.in_channels, self.factor, self.latent_channels = in_channels, factor, latent_channels
        c4 = 4 * in_channels
        down = [nn.Conv2d(c4, w[0], 3, padding=1)]  # on 2x2 patches: (B, w0, H/2, W/2)
        for i in range(levels - 1):  # each further level: a block, then a strided conv halves
            down += [ResBlock(w[i]), nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1)]
        down += [ResBlock(w[-1]), nn.GroupNorm(8, w[-1]), nn.SiLU(),
                 nn.Conv2d(w[-1], 2 * latent_channels, 3, padding=1)]  # (B, 2c, H/f, W/f)
        self.encoder = nn.Sequential(*down)
        up = [nn.Conv2d(latent_channels, w[-1], 3, padding=1), ResBlock(w[-1])]
        for i in reversed(range(levels - 1)):  # each level: nearest 2x, a conv, a block
            up += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                   nn.Conv2d(w[i + 1], w[i], 3, padding=1), ResBlock(w[i])]
        up += [nn.GroupNorm(8, w[0]), nn.SiLU(), nn.Conv2d(w[0], c4, 3, padding=1)]
        self.decoder = nn.Sequential(*up)  # (B, 4C, H/2, W/2): 2x2 patches, unfolded in decode
        # 1 / std of the training latents, set by the trainer after training (`estimate_scale`)
        self.register_buffer("scale_factor", torch.ones(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> mean, logvar of q(z | x), each (B, c, H / f, W / f)."""
        patches = rearrange(x, "b c (h p) (w q) -> b (c p q) h w", p=2, q=2)  # space to depth
        mean, logvar = self.encoder(patches).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, c, H / f, W / f), unscaled -> x (B, C, H, W), not clipped."""
        patches = self.decoder(z)  # (B, 4C, H/2, W/2)
        return rearrange(patches, "b (c p q) h w -> b c (h p) (w q)", p=2, q=2)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """(D(z), mean, logvar) with z = mean + exp(logvar / 2) eps: the reparameterised draw."""
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), averaged over every latent element."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def autoencoder_loss(x, reconstruction, mean, logvar, loss: str = "l1", kl_weight: float = 1e-6):
    """(total, reconstruction term, KL term) of the module docstring's loss."""
    error = reconstruction.float() - x
    rec = error.abs().mean() if loss == "l1" else error.square().mean()
    kl = kl_divergence(mean.float(), logvar.float())
    return rec + kl_weight * kl, rec, kl


def psnr(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image (B,), in dB: 10 log10(1 / MSE) with pixels in
    [0, 1] (the reconstruction clipped to the image range first, as a saved picture is)."""
    error = (reconstruction.clamp(-1, 1) - x) / 2  # [-1, 1] -> [0, 1] units
    mse = error.square().flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


@torch.inference_mode()
def encode_mean(model: Autoencoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The unscaled latent means of `images` (the posterior's mode: no noise), in batches."""
    model.eval()
    return torch.cat([model.encode(images[i:i + batch])[0] for i in range(0, len(images), batch)])


def estimate_scale(model: Autoencoder, images: torch.Tensor) -> float:
    """1 / std of the latents of `images` (the paper's rescaling, section 4.3.2)."""
    return 1.0 / float(encode_mean(model, images).float().std().clamp_min(1e-8))


def encode_latents(model: Autoencoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """What latent diffusion trains on: scale_factor * mean, of about unit std."""
    return encode_mean(model, images, batch) * model.scale_factor


@torch.inference_mode()
def decode_latents(model: Autoencoder, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Images D(z / scale_factor) (B, C, H, W) from scaled latents, as the sampler returns them."""
    model.eval()
    z = z / model.scale_factor
    return torch.cat([model.decode(z[i:i + batch]) for i in range(0, len(z), batch)]).float()


@torch.inference_mode()
def reconstruct(model: Autoencoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """D(mean): each image through the autoencoder, without the sampling noise."""
    model.eval()
    return torch.cat([model.decode(model.encode(images[i:i + batch])[0])
                      for i in range(0, len(images), batch)])


def latent_picture(z: torch.Tensor, size: int | None = None, spread: float = 2.5) -> torch.Tensor:
    """Scaled latents (B, c, h, w) as images to look at: the channels side by side in a square
    mosaic, each grey (-spread .. spread -> black .. white), enlarged to `size` px (nearest)."""
    c = z.shape[1]
    side = math.isqrt(c - 1) + 1  # channels per mosaic row: 4 channels -> 2x2
    pad = z.new_zeros(z.shape[0], side * side - c, *z.shape[2:])
    mosaic = rearrange(torch.cat((z, pad), 1), "b (r k) h w -> b 1 (r h) (k w)", r=side)
    grey = (mosaic.float() / spread).clamp(-1, 1).expand(-1, 3, -1, -1)  # (B, 3, side h, side w)
    if size is not None and size != grey.shape[-1]:
        grey = F.interpolate(grey, size=(size, size), mode="nearest")
    return grey


def beside(latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Each latent's picture to the left of its decoded image: (B, 3, H, 2W), one tile each."""
    return torch.cat((latent_picture(latents, images.shape[-1]),
                      images.float().to(latents.device)), dim=-1)


def fingerprint(state_dict: dict) -> str:
    """A short SHA-256 of the weights (names, shapes and bytes, the scale factor included): a
    retrained autoencoder gets another one."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# A trained autoencoder read back, and the diffusion run tied to it


def autoencoder_path(run_or_ckpt: str | os.PathLike) -> Path:
    """The checkpoint of an autoencoder run folder (or the file itself), found as every run's is
    (`resolve_checkpoint`); one line naming --autoencoder if none."""
    try:
        return resolve_checkpoint(Path(run_or_ckpt))  # a path, never "the newest run"
    except MinidiffError:
        raise MinidiffError(f"--autoencoder {run_or_ckpt}: no {CHECKPOINT_NAME} there; pass the "
                            "folder of a finished 'python -m minidiff train-autoencoder' "
                            "run") from None


def load_autoencoder(run_or_ckpt, device="cpu") -> tuple[Autoencoder, dict, Path]:
    """(the autoencoder in eval mode, its checkpoint, the checkpoint's path), every part checked
    before anything is built from it."""
    path = autoencoder_path(run_or_ckpt)
    state = load_checkpoint(path, map_location="cpu", kind=AUTOENCODER_KIND)
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("network"), dict):
        raise malformed(path, "its config has no network settings")
    check_plain(config, path)
    network = config["network"]
    names = {"in_channels", *NETWORK_FIELDS}
    if set(network) != names or not all(isinstance(v, int) and not isinstance(v, bool)
                                        and 1 <= v <= 4096 for v in network.values()):
        raise mismatch(path, f"its network settings are {str(network)[:80]}")
    try:
        with torch.device("meta"):
            expected = {name: (tuple(t.shape), t.dtype)
                        for name, t in Autoencoder(**network).state_dict().items()}
    except (ValueError, RuntimeError) as error:
        raise mismatch(path, str(error).splitlines()[0][:80]) from None
    check_weights(state.get("model"), expected, "its weights", path)
    model = Autoencoder(**network)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state, path


def autoencoder_image_size(run_or_ckpt) -> int:
    """The image side an autoencoder run was trained at (`train --autoencoder` defaults to it)."""
    _, state, _ = load_autoencoder(run_or_ckpt)
    return int(state["config"]["image_size"])


@dataclasses.dataclass
class Latents:
    """The autoencoder a diffusion run trains on, and the record its checkpoint keeps."""

    model: Autoencoder
    record: dict

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.model, z.to(self.model.scale_factor.device))


def encode_dataset(dataset: Dataset, run_or_ckpt, device) -> tuple[Dataset, Latents]:
    """`dataset` with its images replaced by their scaled latents (encoded once, here), and the
    autoencoder that decodes them."""
    model, state, path = load_autoencoder(run_or_ckpt, device)
    size = int(state["config"]["image_size"])
    if tuple(dataset.images.shape[1:]) != (model.in_channels, size, size):
        raise MinidiffError(f"--autoencoder {run_or_ckpt} was trained on {size} px images with "
                            f"{model.in_channels} channels, but the data is "
                            f"{tuple(dataset.images.shape[1:])}: pass --image-size {size}")
    z = encode_latents(model, dataset.images.to(device)).cpu()
    record = {"run": str(path.parent.resolve()), "sha256": fingerprint(model.state_dict()),
              "scale_factor": float(model.scale_factor), "image_shape": [model.in_channels,
                                                                          size, size],
              "latent_shape": list(z.shape[1:])}
    latent = Dataset(images=z, contexts=dataset.contexts, classes=dataset.classes,
                     name=dataset.name)
    return latent, Latents(model, record)


def autoencoder_of(config: dict, run_path: Path, device="cpu") -> Latents | None:
    """The autoencoder that decodes a diffusion run's samples (None for a pixel-space run),
    checked against the fingerprint the run recorded; one line if it is gone or was retrained."""
    record = config.get("autoencoder")
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("run"), str):
        raise MinidiffError(f"{run_path}: its autoencoder record is not laid out as minidiff "
                            "writes it; train the diffusion model again")
    recorded = Path(record["run"])
    run_folder = run_path.parent if run_path.is_file() else run_path
    found = next((p for p in (recorded, run_folder.parent / recorded.name)
                  if (p / CHECKPOINT_NAME).is_file()), None)
    if found is None:
        raise MinidiffError(f"{run_path} decodes its latents with the autoencoder {recorded}, "
                            f"which is gone (no {CHECKPOINT_NAME} there or beside the run); "
                            "restore that folder, or train the diffusion model again on another")
    model, _, _ = load_autoencoder(found, device)
    if fingerprint(model.state_dict()) != record.get("sha256"):
        raise MinidiffError(f"the autoencoder {found} was retrained after {run_folder} was "
                            "trained on its latents (its weights' fingerprint changed), so the "
                            "samples would decode wrongly; restore it, or train the diffusion "
                            "model again with --autoencoder " + str(found))
    return Latents(model, record)
