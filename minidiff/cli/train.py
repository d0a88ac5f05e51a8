"""`python -m minidiff train`: train a ContextUnet; every flag maps onto a `TrainConfig` field.

    python -m minidiff train                              # built-in sprites, the default recipe
    python -m minidiff train --preset course              # the course's run, exactly
    python -m minidiff train --data x.npy --labels y.npy --minutes 5
    python -m minidiff train --resume --out runs/NAME     # continue a stopped run
    torchrun --nproc_per_node=2 -m minidiff train ...     # data-parallel

Only the flags given override the preset (or the defaults); a resumed run takes its recipe from
its checkpoint, and flags that would change it are refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from minidiff.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from minidiff.utils.errors import MinidiffError
from minidiff.training.config import PRESETS, TrainConfig, resumed_config, train, with_preset

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


# %% argparse types: a clear message for anything that is not the number asked for

def _integer(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: it must be >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _number(low: float, high: float = math.inf, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value >= high:
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"{value:g} is outside the valid range {bounds}")
        return value

    parse.__name__ = "number"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # only flags actually given reach the config
    add = parser.add_argument
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=s, help="'sprites' (built-in, default), a .npy file in "
                      "the course's layout, or a folder of images (one subfolder per class)")
    data.add_argument("--labels", default=s, help="one-hot labels .npy for a .npy --data")
    data.add_argument("--classes", default=s, help="class names 'a,b,c' or a .json file")
    data.add_argument("--n-images", type=_integer(1), default=s, help="use this many images")
    data.add_argument("--image-size", type=_integer(4), default=s, help="pixels (default 16)")
    model = parser.add_argument_group("schedule and network")
    model.add_argument("--schedule", choices=("linear", "cosine"), default=s)
    model.add_argument("--timesteps", type=_integer(1), default=s, help="T (default 500)")
    model.add_argument("--beta1", type=_number(0, 1, low_open=True), default=s)
    model.add_argument("--beta2", type=_number(0, 1, low_open=True), default=s)
    model.add_argument("--arch", choices=("minidiff", "course"), default=s)
    model.add_argument("--n-feat", type=_integer(8), default=s, help="channels (default 64)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=_integer(1), default=s)
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_integer(1), default=s, help="optimizer steps")
    length.add_argument("--epochs", type=_number(0, low_open=True), default=s)
    opt.add_argument("--minutes", type=_number(0, low_open=True), default=s,
                     help="time budget; alone, the step count is fitted to it")
    opt.add_argument("--optimizer", choices=("adamw", "adam"), default=s)
    opt.add_argument("--lr", type=_number(0, 1, low_open=True), default=s)
    opt.add_argument("--weight-decay", type=_number(0), default=s)
    opt.add_argument("--warmup-steps", type=_integer(0), default=s)
    opt.add_argument("--lr-schedule", choices=("cosine", "constant", "course"), default=s)
    opt.add_argument("--ema-decay", type=_number(0, 1), default=s, help="0 turns EMA off")
    opt.add_argument("--grad-clip", type=_number(0), default=s, help="0 turns clipping off")
    opt.add_argument("--context-drop", type=_number(0, 1), default=s)
    opt.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=s)
    opt.add_argument("--seed", type=_integer(0), default=s)
    engine = parser.add_argument_group("engine")
    engine.add_argument("--device", default=s, help="auto (default), cpu, cuda")
    engine.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=s)
    engine.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=s)
    engine.add_argument("--compile", action=argparse.BooleanOptionalAction, default=s)
    engine.add_argument("--threads", type=_integer(1), default=s)
    run = parser.add_argument_group("run folder")
    run.add_argument("--out", default=s, help="run folder (default runs/<timestamp>)")
    run.add_argument("--resume", nargs="?", const=True, default=s, metavar="RUN",
                     help="continue the run in --out (or RUN) from its checkpoint")
    run.add_argument("--sample-every", type=_integer(0), default=s)
    run.add_argument("--checkpoint-every", type=_integer(0), default=s)
    run.add_argument("--log-every", type=_integer(1), default=s)
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=s)
    add("--preset", choices=tuple(PRESETS), default=s, help="'course': the course's recipe")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items() if k in FIELDS or k == "preset"}
    resume = given.pop("resume", False)
    if isinstance(resume, str):
        given.setdefault("out", resume)
    if resume:
        return _resume_config(given)
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
    path = Path(given["out"]) / CHECKPOINT_NAME
    if not path.is_file():
        raise MinidiffError(f"--resume: there is no {CHECKPOINT_NAME} in {given['out']} to "
                            "continue from; check --out, or drop --resume to start a new run")
    saved = load_checkpoint(path).get("config", {}).get("train", {})
    if given.pop("preset", saved.get("preset")) != saved.get("preset"):
        raise MinidiffError(f"{path} was not trained with that --preset; drop it to resume")
    return resumed_config(saved, **given, **(_length(given) if {"steps", "epochs"} & set(given)
                                              else {}))


def main(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0
