"""Run folders holding an untrained network, for the tests of the commands that read runs
(`sample`, `eval`): sampling plumbing needs no training."""

import dataclasses

import torch

from minidiff.checkpoint import save_checkpoint
from minidiff.data.sprites import CLASSES
from minidiff.unet import UnetConfig, build_unet

SCHEDULE = {"kind": "linear", "T": 500, "beta1": 1e-4, "beta2": 0.02}


def write_run(folder, n_cfeat=5):
    """A run folder holding an untrained n_feat=8 network."""
    torch.manual_seed(0)
    config = UnetConfig(n_feat=8, n_cfeat=n_cfeat)
    model = build_unet(config)
    state = {"config": {"unet": dataclasses.asdict(config), "schedule": SCHEDULE},
             "classes": list(CLASSES[:n_cfeat]), "model": model.state_dict(),
             "ema": model.state_dict()}
    save_checkpoint(folder / "checkpoint.pt", state)
    return folder
