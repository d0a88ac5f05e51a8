"""`python -m minidiff train-autoencoder`: train the first stage of latent diffusion; every flag
maps onto an `AutoencoderConfig` field (`minidiff/autoencoder_config.py`).

    python -m minidiff train-autoencoder --data emoji_32x32.npy --labels labels.npy --out runs/ae
    python -m minidiff train-autoencoder --resume --out runs/ae --steps 4000   # train it longer
    python -m minidiff train --autoencoder runs/ae --data emoji_32x32.npy --labels labels.npy

A resumed run takes its recipe from its checkpoint; flags that would change it are refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from minidiff.autoencoder_config import SESSION_FIELDS, AutoencoderConfig
from minidiff.cli import flags
from minidiff.training.runs import resume_checkpoint
from minidiff.utils.errors import MinidiffError

GROUPS = {
    "data": ["data", "labels", "n_images", "image_size", "holdout"],
    "network": ["factor", "latent_channels", "n_feat"],
    "optimisation": ["loss", "kl_weight", "batch_size", "minutes", "lr", "seed"],
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
    given = flags.settings_from(args, AutoencoderConfig)
    resume = given.pop("resume", False)
    if isinstance(resume, str):
        given.setdefault("out", resume)
    if "minutes" in given and "steps" not in given:
        given["steps"] = None  # --minutes alone fits the step count to the budget
    if not resume:
        return dataclasses.replace(AutoencoderConfig(), **given)
    if "out" not in given:
        raise MinidiffError("--resume needs the run to continue: pass --out runs/NAME "
                            "(or --resume runs/NAME)")
    from minidiff.training.latents import load_autoencoder  # torch: only once it is needed

    _, state, _ = load_autoencoder(resume_checkpoint(Path(given["out"])))
    saved = state["config"].get("autoencoder", {})
    known = {f.name for f in dataclasses.fields(AutoencoderConfig)}
    recipe = {k: v for k, v in saved.items() if k in known and k not in SESSION_FIELDS}
    for name, value in given.items():
        if name not in SESSION_FIELDS and recipe.get(name, value) != value:
            raise MinidiffError(f"{given['out']} was trained with {name}={recipe[name]!r}, "
                                f"not {value!r}; drop that flag to resume, or train into a "
                                "new --out")
    steps = given.pop("steps", saved.get("steps"))
    return AutoencoderConfig(**{**recipe, **given, "steps": steps, "resume": True})


def main(args: argparse.Namespace) -> int:
    from minidiff.training.autoencoder_trainer import train_autoencoder

    train_autoencoder(config_from_args(args))
    return 0
