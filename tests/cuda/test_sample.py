"""`python -m minidiff sample` on the GPU: --fused gives the torch path's pixels, and the GPU the
CPU's, for the same seed (the Philox convention of minidiff.reference.philox promises both).

One tiny run is trained on the GPU first (n_feat 16, 60 steps of the default recipe), so that
the network's output is structured rather than the near-constant of fresh weights.
"""

import numpy as np
import pytest

from minidiff.cli import main
from minidiff.training.config import TrainConfig
from minidiff.training.trainer import train

pytestmark = pytest.mark.cuda

SAMPLERS = {"ddpm": ["--sampler", "ddpm"], "ddim-eta1": ["--steps", "25", "--eta", "1"],
            "ddim": ["--steps", "25"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(TrainConfig(n_images=512, n_feat=16, batch_size=64, steps=60, warmup_steps=5,
                      sample_every=0, checkpoint_every=0, progress=False, device="cuda",
                      out=str(out)))
    return out


def pixels(run, tmp_path, name, *flags):
    npy = tmp_path / f"{name}.npy"
    code = main(["sample", "--run", str(run), "--n", "64", "--class", "0,1,2,3,4", "--seed", "3",
                 "--out", str(tmp_path / f"{name}.png"), "--npy", str(npy), *flags])
    assert code == 0
    return np.load(npy).astype(int)


def level_difference(a, b, record_property) -> int:
    worst = int(np.abs(a - b).max())
    record_property("max_level_difference", worst)
    record_property("share_identical", round(float((a == b).mean()), 4))
    return worst


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_fused_gives_the_torch_pixels_on_the_gpu(run, tmp_path, sampler, record_property):
    torch_path = pixels(run, tmp_path, "torch", "--device", "cuda", *SAMPLERS[sampler])
    fused = pixels(run, tmp_path, "fused", "--device", "cuda", "--fused", *SAMPLERS[sampler])
    assert level_difference(torch_path, fused, record_property) <= 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cpu_and_gpu_give_the_same_pixels(run, tmp_path, sampler, record_property):
    cpu = pixels(run, tmp_path, "cpu", "--device", "cpu", *SAMPLERS[sampler])
    gpu = pixels(run, tmp_path, "gpu", "--device", "cuda", *SAMPLERS[sampler])
    assert 0 < cpu.std(), "the run samples flat images: nothing is compared"
    assert level_difference(cpu, gpu, record_property) <= 1
