"""Tiny training runs (a second or two on a CPU) shared by the trainer's, `train`'s, the
autoencoder's and the lab's tests."""

from minidiff import cli
from minidiff.training import TrainConfig
from minidiff.training.config import AutoencoderConfig

# `minidiff train` flags for a run on 32 built-in sprites with an 8-channel network
TINY = ["--n-images", "32", "--n-feat", "8", "--batch-size", "8", "--sample-every", "0",
        "--no-progress", "--device", "cpu", "--threads", "1"]


def tiny(out, **overrides) -> TrainConfig:
    """8 steps on 64 sprites, a checkpoint at step 4, a metrics line every 2 steps."""
    base = {"n_images": 64, "n_feat": 8, "batch_size": 16, "steps": 8, "warmup_steps": 2,
            "sample_every": 0, "checkpoint_every": 4, "log_every": 2, "progress": False,
            "device": "cpu", "threads": 1, "out": str(out)}
    return TrainConfig(**{**base, **overrides})


def tiny_autoencoder(out, **overrides) -> AutoencoderConfig:
    """6 steps on 64 built-in sprites at 32 px, an 8-channel network, a checkpoint at step 3."""
    base = {"n_images": 64, "n_feat": 8, "batch_size": 8, "steps": 6, "checkpoint_every": 3,
            "log_every": 2, "progress": False, "device": "cpu", "threads": 1, "out": str(out)}
    return AutoencoderConfig(**{**base, **overrides})


def run_train(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stderr, stdout) of `minidiff train ...`, whether argparse or the command
    refused."""
    try:
        code = cli.main(["train", *argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out
