"""A tiny trained run for the lab's tests (a second or two on a CPU), made once per module."""

import pytest

from minidiff.training import train

from tiny_runs import tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """runs/tiny: 8 steps, preview grids at steps 4 and 8, a metrics line every 2 steps."""
    out = tmp_path_factory.mktemp("lab") / "runs" / "tiny"
    train(tiny(out, sample_every=4))
    return out
