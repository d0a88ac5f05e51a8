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
import dataclasses
from pathlib import Path

from minidiff.cli import flags
from minidiff.training.checkpoint import load_checkpoint
from minidiff.training.config import TrainConfig, resumed_config, with_preset
from minidiff.training.runs import resume_checkpoint
from minidiff.training.trainer import train
from minidiff.utils.errors import MinidiffError

# The flags, grouped as `minidiff train --help` shows them; each is a TrainConfig field, with its
# type, range, help and default from there (`minidiff.utils.rules.setting`).
GROUPS = {
    "data": ["data", "labels", "classes", "n_images", "image_size", "autoencoder"],
    "schedule and network": ["schedule", "timesteps", "beta1", "beta2", "arch", "n_feat", "patch",
                             "dropout", "prediction"],
    "optimisation": ["minutes", "batch_size", "optimizer", "lr", "weight_decay", "warmup_steps",
                     "lr_schedule", "ema_decay", "grad_clip", "loss_weight", "snr_gamma",
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
    given = flags.settings_from(args, TrainConfig)
    resume = given.pop("resume", False)
    if isinstance(resume, str):
        given.setdefault("out", resume)
    if resume:
        return _resume_config(given)
    if given.get("autoencoder"):  # latent diffusion (tutorials/09_latent_diffusion.py)
        from minidiff.training.latents import autoencoder_image_size

        # the size the latents come from, and an 8x8 latent read cell by cell, not in 2x2
        # patches (loss 0.17 against 0.50 after 200 steps in the chapter's small run)
        given.setdefault("image_size", autoencoder_image_size(given["autoencoder"]))
        given.setdefault("patch", 1)
    preset = given.get("preset")
    base = with_preset(preset) if preset else TrainConfig()
    return dataclasses.replace(base, **given, **_length(given))


def _length(given: dict) -> dict:
    """--epochs replaces the default step count; --minutes alone fits the steps to the budget."""
    if "steps" in given:
        return {"epochs": None}
    if "epochs" in given:
        return {"steps": None}
    if "minutes" in given:
        return {"steps": None, "epochs": None}
    return {}


def _resume_config(given: dict) -> TrainConfig:
    if "out" not in given:
        raise MinidiffError("--resume needs the run to continue: pass --out runs/NAME "
                            "(or --resume runs/NAME)")
    path = resume_checkpoint(Path(given["out"]))
    saved = load_checkpoint(path).get("config", {}).get("train", {})
    if given.pop("preset", saved.get("preset")) != saved.get("preset"):
        raise MinidiffError(f"{path} was not trained with that --preset; drop it to resume")
    return resumed_config(saved, **given, **(_length(given) if {"steps", "epochs"} & set(given)
                                              else {}))


def main(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0
