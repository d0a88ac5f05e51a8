"""`python -m minidiff train`: train a ContextUnet; every flag maps onto a `TrainConfig` field.

    python -m minidiff train                              # built-in sprites, the default recipe
    python -m minidiff train --preset course              # the course's run, exactly
    python -m minidiff train --data x.npy --labels y.npy --minutes 5
    python -m minidiff train --resume --out runs/NAME     # continue a stopped run
    python -m minidiff train --autoencoder runs/AE ...    # latent diffusion (train-autoencoder)
    torchrun --nproc_per_node=2 -m minidiff train ...     # data-parallel

Only the flags given override the preset (or the defaults); a resumed run takes its recipe from
its checkpoint, and flags that would change it are refused. Session flags (length, engine, run
folder) may change on resume; another --threads count is allowed, with a note, but float sums
then round differently, so the weights are not bit-for-bit those of an uninterrupted run.
"""

from __future__ import annotations

import argparse

from minidiff.cli import flags
from minidiff.training.config import TrainConfig, train_config
from minidiff.training.trainer import train

# The flags, grouped as `minidiff train --help` shows them; each is a TrainConfig field, with its
# type, range, help and default from there (`minidiff.utils.rules.setting`).
GROUPS = {
    "data": ["data", "labels", "classes", "n_images", "image_size", "autoencoder"],
    "schedule and network": ["schedule", "timesteps", "beta1", "beta2", "arch", "n_feat", "patch",
                             "pixel_feat", "dropout", "prediction"],
    "optimisation": ["minutes", "batch_size", "optimizer", "lr", "weight_decay", "warmup_steps",
                     "lr_schedule", "ema_decay", "grad_clip", "loss_weight", "snr_gamma",
                     "t_sampling", "p_mean", "p_std",
                     "context_drop", "hflip", "seed"],
    "engine": ["device", "precision", "channels_last", "compile", "threads"],
    "run folder": ["out", "sample_every", "checkpoint_every", "log_every", "progress"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # only flags actually given reach the config: they override the preset (or the defaults)
    for title, names in GROUPS.items():
        group = parser.add_argument_group(title)
        if title == "optimisation":  # how long: --steps or --epochs (and/or --minutes)
            length = group.add_mutually_exclusive_group()
            flags.add_settings(length, TrainConfig, ["steps", "epochs"], only_given=True)
        flags.add_settings(group, TrainConfig, names, only_given=True)
        if title == "run folder":
            group.add_argument("--resume", nargs="?", const=True, default=argparse.SUPPRESS,
                               metavar="RUN", help="continue the run in --out (or RUN) from its "
                               "checkpoint (default: a new run)")
    flags.add_settings(parser, TrainConfig, ["preset"], only_given=True)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig, assembled in one pass from the flags typed (`train_config`)."""
    return train_config(flags.settings_from(args, TrainConfig))


def main(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0
