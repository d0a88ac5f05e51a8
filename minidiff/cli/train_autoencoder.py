"""`python -m minidiff train-autoencoder`: train the first stage of latent diffusion; every flag
maps onto an `AutoencoderConfig` field (`minidiff/training/config.py`).

    python -m minidiff train-autoencoder --data emoji_32x32.npy --labels labels.npy --out runs/ae
    python -m minidiff train-autoencoder --resume --out runs/ae --steps 4000   # train it longer
    python -m minidiff train --autoencoder runs/ae --data emoji_32x32.npy --labels labels.npy

A resumed run takes its recipe from its checkpoint; flags that would change it are refused.
"""

from __future__ import annotations

import argparse

from minidiff.cli import flags
from minidiff.training.config import AutoencoderConfig, autoencoder_config

GROUPS = {
    "data": ["data", "labels", "classes", "n_images", "image_size", "holdout"],
    "network": ["factor", "latent_channels", "n_feat"],
    "optimisation": ["loss", "kl_weight", "batch_size", "minutes", "lr", "warmup_steps", "seed"],
    "engine": ["device", "threads"],
    "run folder": ["out", "checkpoint_every", "log_every", "progress"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for title, names in GROUPS.items():
        group = parser.add_argument_group(title)
        if title == "optimisation":
            flags.add_settings(group, AutoencoderConfig, ["steps"], only_given=True)
        flags.add_settings(group, AutoencoderConfig, names, only_given=True)
        if title == "run folder":
            group.add_argument("--resume", nargs="?", const=True, default=argparse.SUPPRESS,
                               metavar="RUN", help="continue the run in --out (or RUN) from its "
                               "checkpoint (default: a new run)")


def config_from_args(args: argparse.Namespace) -> AutoencoderConfig:
    """The run's AutoencoderConfig, assembled in one pass from the flags typed."""
    return autoencoder_config(flags.settings_from(args, AutoencoderConfig))


def main(args: argparse.Namespace) -> int:
    from minidiff.training.autoencoder import train_autoencoder

    train_autoencoder(config_from_args(args))
    return 0
