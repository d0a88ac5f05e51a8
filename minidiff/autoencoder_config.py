"""What an autoencoder run is, without torch: `AutoencoderConfig`, every knob of
`python -m minidiff train-autoencoder`, each declared once with `setting` (its default, help and
rule), as `minidiff.training.config.TrainConfig` declares the diffusion run's.

The network (`minidiff/autoencoder.py`) shrinks each side `factor` times (a power of 2) into
`latent_channels` channels: the default 32x32x3 images become 8x8x4 latents, 12x fewer numbers,
the shape Stable Diffusion's first stage gives 256 px images at factor 8 (Rombach et al. 2022).

Why the defaults (emoji 32x32, one thread; `minidiff/autoencoder.py` has the numbers): an L1
reconstruction loss matched or beat MSE on held-out PSNR at the same step count (23.50 against
23.39 dB after 800 steps); the paper's KL weight 1e-6 is kept, since the PSNR did not care (20.78,
20.74 and 20.77 dB after 300 steps at weights 0, 1e-6 and 1e-3); n_feat 32 on 2x2 patches is
what a share of 15 CPU-minutes can train; and in that time, more smaller steps at a higher rate
win: batch 32 at lr 8e-3 for 4,000 steps (the same images seen as the earlier 2,000 at batch
64, lr 2e-3).

Tutorial: tutorials/09_latent_diffusion.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minidiff.training.config import CORES, MAX_IMAGE_SIZE, MAX_IMAGES
from minidiff.unet_config import check_image_size
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting

LOSSES = ("l1", "mse")
AUTOENCODER_KIND = "autoencoder"  # the `kind` of its checkpoint (minidiff.training.checkpoint)


@dataclass
class AutoencoderConfig:
    # data (the same rules as `train`'s)
    data: str | None = setting(None, "'sprites' (built-in, the default), a .npy file in the "
                               "course's layout, or a folder of images")
    labels: str | None = setting(None, "one-hot labels .npy for a .npy --data (only used to lay "
                                 "the reconstructions grid out one column per class)")
    n_images: int | None = setting(None, "use this many images (default: all of them)", low=1,
                                   high=MAX_IMAGES)
    image_size: int = setting(32, "images are resized to this many pixels square", low=4,
                              high=MAX_IMAGE_SIZE)
    holdout: float = setting(0.05, "share of the images kept out of training: the PSNR is "
                             "measured on them (a seeded split)", above=0, below=0.5)
    # network
    factor: int = setting(4, "each side shrinks this many times (a power of 2): 32 px -> 8",
                          low=2, high=16)
    latent_channels: int = setting(4, "channels of the latent (the paper's 4)", low=1, high=64)
    n_feat: int = setting(32, "channels on the 2x2 patches, doubled at each further halving (a "
                          "multiple of 8)", low=8, high=512)
    # loss and optimisation
    loss: str = setting("l1", "reconstruction loss: l1 (it matched or beat mse on held-out "
                        "PSNR) or mse", choices=LOSSES)
    kl_weight: float = setting(1e-6, "weight of the KL term that keeps the latents near N(0, I)",
                               low=0, below=1)
    batch_size: int = setting(32, "images per step", low=1, high=65_536)
    steps: int | None = setting(4000, "optimizer steps", low=1, high=100_000_000)
    minutes: float | None = setting(None, "wall-clock budget; alone, the step count is fitted "
                                    "to it (default: no budget)", above=0)
    lr: float = setting(8e-3, "peak learning rate (AdamW), after 50 warm-up steps, cosine to 0",
                        above=0, below=1)
    seed: int = setting(0, "weights, data order and the latent noise follow from it", low=0,
                        high=2**32 - 1)
    # engine and run folder
    device: str = setting("auto", "auto, cpu, cuda (or mps)")
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice); on a "
                                  "shared machine --threads 1", low=1, high=CORES,
                                  why=f"this machine has {CORES} cores")
    out: str | None = setting(None, "run folder (default: runs/autoencoder-<timestamp>)")
    resume: bool = setting(False, "continue the run in --out from its checkpoint")
    checkpoint_every: int = setting(500, "steps between checkpoints (and at the end, and on "
                                    "Ctrl-C); 0: only then", low=0)
    log_every: int = setting(25, "steps between metrics.jsonl lines", low=1)
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self):
        check_autoencoder_config(self)

    @property
    def latent_size(self) -> int:
        """The latent's side: image_size / factor."""
        return self.image_size // self.factor


# Fields a resumed run may change: how long, where and how fast; never what is trained.
SESSION_FIELDS = ("steps", "minutes", "device", "threads", "out", "resume", "checkpoint_every",
                  "log_every", "progress")
NETWORK_FIELDS = ("factor", "latent_channels", "n_feat")  # with the channels: the network


def check_autoencoder_config(config: AutoencoderConfig) -> None:
    """Each field's own rule, then the rules that tie fields together; one line each."""
    check_settings(config)
    check_image_size(config.image_size)
    f = config.factor
    if f & (f - 1):
        raise MinidiffError(f"factor={f} is not a power of 2 (each level halves the image): "
                            "pass 2, 4, 8 or 16")
    if config.image_size % f or config.image_size // f < 4:
        raise MinidiffError(f"image_size={config.image_size} does not shrink {f} times to a "
                            "latent of at least 4 px: pass a smaller --factor or a larger "
                            "--image-size")
    check_image_size(config.latent_size, f"the latent side ({config.image_size} / {f})")
    if config.steps is None and config.minutes is None:
        raise MinidiffError("nothing says how long to train; pass --steps or --minutes")
    if config.n_feat % 8:
        raise MinidiffError(f"n_feat={config.n_feat} must be a multiple of 8 (GroupNorm(8))")


def network_settings(config: AutoencoderConfig | dict, in_channels: int) -> dict:
    """The network's own settings (what `minidiff.autoencoder.Autoencoder` takes)."""
    values = dataclasses.asdict(config) if not isinstance(config, dict) else config
    return {"in_channels": in_channels, **{name: values[name] for name in NETWORK_FIELDS}}
