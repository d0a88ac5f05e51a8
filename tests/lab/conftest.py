"""Tiny trained runs for the lab's tests (a second or two on a CPU), made once per module: a
pixel run, and a latent run on a tiny autoencoder."""

import pytest

from minidiff.training import train
from minidiff.training.autoencoder import train_autoencoder

from tiny_runs import tiny, tiny_autoencoder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """runs/tiny: 8 steps, preview grids at steps 4 and 8, a metrics line every 2 steps."""
    out = tmp_path_factory.mktemp("lab") / "runs" / "tiny"
    train(tiny(out, sample_every=4))
    return out


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A latent run of 4 steps at 32 px on the latents of a 6-step autoencoder."""
    root = tmp_path_factory.mktemp("lab_latent")
    train_autoencoder(tiny_autoencoder(root / "ae"))
    train(tiny(root / "run", autoencoder=str(root / "ae"), image_size=32, steps=4))
    return root / "run"
