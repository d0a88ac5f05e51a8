"""Checkpoints: one file per run, written atomically, loaded without executing anything.

A checkpoint is a plain dict saved with `torch.save` and read back with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain Python containers: a file
crafted to run code on load is refused, and the code does not run. Layout:

| key         | what                                                                      |
|-------------|---------------------------------------------------------------------------|
| `format`    | "minidiff-checkpoint" (anything else is not ours)                         |
| `version`   | layout version, 1                                                         |
| `config`    | the run's configuration as plain types; `config["unet"]` (UnetConfig's    |
|             | fields) and `config["schedule"]` (`kind`, `T`, `beta1`, `beta2`) at least |
| `classes`   | class names in context-vector order ([] for an unconditional model)       |
| `model`     | the network's state_dict                                                  |
| `ema`       | the EMA network's state_dict, or None                                     |
| `optimizer`, `step`, `rng`, ...: whatever the trainer needs to resume exactly                 |
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from minidiff.utils.atomic import atomic_path
from minidiff.utils.device import resolve_device
from minidiff.utils.errors import MinidiffError
from minidiff.schedules import Schedule, make_schedule

FORMAT = "minidiff-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write `state` (plain types and tensors only) as a minidiff checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint, refusing anything that is missing, torn, foreign or not plain data."""
    path = Path(path)
    if not path.is_file():
        raise MinidiffError(f"no checkpoint at {path}: pass a run folder or a {CHECKPOINT_NAME} file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # torch's message opens with advice; the line naming the refused object is further down
        first = next((line for line in lines if "Unsupported global" in line),
                     lines[0] if lines else "unsupported object")
        raise MinidiffError(
            f"{path} was refused: it holds objects other than tensors and plain data, which could "
            f"run code on load ({first[:120]}); only load checkpoints written by minidiff"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise MinidiffError(
            f"{path} is truncated or corrupted ({type(error).__name__}); "
            "use another checkpoint or train again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MinidiffError(f"{path} is not a minidiff checkpoint (no '{FORMAT}' marker)")
    if state.get("version", 0) > VERSION:
        raise MinidiffError(f"{path} was written by a newer minidiff (layout {state['version']}); "
                            "upgrade minidiff to read it")
    return state


def resolve_checkpoint(run_or_ckpt: str | os.PathLike | None = None, runs_dir="runs") -> Path:
    """A run folder, a checkpoint file, or None for the newest run under `runs_dir`."""
    if run_or_ckpt is None:
        found = sorted(Path(runs_dir).glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MinidiffError(
                f"no trained run found: looked for {Path(runs_dir).resolve()}/*/{CHECKPOINT_NAME}; "
                "train one with 'python -m minidiff train' or pass --run/--ckpt"
            )
        return found[-1]
    path = Path(run_or_ckpt)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise MinidiffError(f"no checkpoint at {path}: pass a run folder or a {CHECKPOINT_NAME} file")
    return path


@dataclass
class Trained:
    """A trained model ready to sample: the network in eval mode and what it was trained with."""

    model: torch.nn.Module
    schedule: Schedule
    classes: list[str]
    config: dict
    path: Path


def load_trained(run_or_ckpt=None, device="cpu", weights: str = "ema", runs_dir="runs") -> Trained:
    """Load a run for sampling: EMA weights where the run kept them (`weights="model"` for the raw
    ones), the schedule it was trained with, and its class names."""
    from minidiff.unet import UnetConfig, build_unet  # the network imports lazily: loading is cheap

    path = resolve_checkpoint(run_or_ckpt, runs_dir)
    device = resolve_device(device)
    state = load_checkpoint(path)
    config = state.get("config") or {}
    try:
        model = build_unet(UnetConfig(**config["unet"]))
        weights_state = state["ema"] if weights == "ema" and state.get("ema") else state["model"]
        model.load_state_dict(weights_state)
        schedule = make_schedule(**config["schedule"], device=device)
    except (KeyError, TypeError, RuntimeError) as error:
        raise MinidiffError(f"{path} does not match this minidiff's network or schedule "
                            f"({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    return Trained(model.to(device).eval(), schedule, list(state.get("classes", [])), config, path)
