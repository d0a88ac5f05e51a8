"""The autoencoder of latent diffusion (`minidiff/autoencoder.py`), its trainer and the latent
diffusion runs built on it: shapes at every factor, the config's one-line rules, PSNR against
its formula, the scale factor, a resumed run bit for bit, and a latent run that samples, decodes
itself, and says in one line when its autoencoder is gone or was retrained."""

import json
import math
import shutil

import pytest
import torch

import minidiff
from minidiff.autoencoder import (
    Autoencoder,
    autoencoder_loss,
    decode_latents,
    encode_latents,
    estimate_scale,
    fingerprint,
    latent_picture,
    load_autoencoder,
    psnr,
)
from minidiff.checkpoint import load_checkpoint
from minidiff.training import train
from minidiff.training.autoencoder import reconstruction_grid, train_autoencoder
from minidiff.training.config import AutoencoderConfig
from minidiff.utils.errors import MinidiffError

from tiny_runs import tiny, tiny_autoencoder


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae") / "ae"
    train_autoencoder(tiny_autoencoder(out))
    return out


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, autoencoder_run):
    out = tmp_path_factory.mktemp("latent") / "run"
    train(tiny(out, autoencoder=str(autoencoder_run), image_size=32, steps=4))
    return out


@pytest.mark.parametrize("factor, channels, size", [(2, 3, 16), (4, 4, 32), (8, 1, 32),
                                                     (4, 4, 12)])
def test_encode_and_decode_shapes_at_every_factor(factor, channels, size):
    torch.manual_seed(0)
    model = Autoencoder(factor=factor, latent_channels=channels, n_feat=8)
    x = torch.rand(2, 3, size, size) * 2 - 1
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, channels, size // factor, size // factor)
    reconstruction, _, _ = model(x, torch.randn_like(mean))
    assert reconstruction.shape == x.shape


@pytest.mark.parametrize("settings, says", [
    ({"factor": 3}, "factor=3 is not a power of 2"),
    ({"factor": 16}, "image_size=32 does not shrink 16 times"),
    ({"factor": 4, "image_size": 8}, "does not shrink 4 times"),
    ({"loss": "huber"}, "loss='huber' is not one of l1, mse"),
    ({"n_feat": 12}, "n_feat=12 must be a multiple of 8"),
    ({"steps": None}, "nothing says how long to train"),
])
def test_config_refuses_bad_settings_in_one_line(settings, says):
    with pytest.raises(MinidiffError, match=says) as error:
        AutoencoderConfig(**settings)
    assert "\n" not in str(error.value)


def test_psnr_follows_its_formula():
    x = torch.zeros(3, 3, 4, 4)
    off = x + 0.2  # 0.1 in [0, 1] units: MSE 0.01, PSNR 20 dB
    assert torch.allclose(psnr(x, off), torch.full((3,), 20.0), atol=1e-4)
    assert float(psnr(x, x + 5).max()) == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)  # clip
    assert float(psnr(x, x).min()) == pytest.approx(100.0)  # exact: capped, not infinite


def test_loss_terms_and_the_scale_factor():
    torch.manual_seed(0)
    model = Autoencoder(n_feat=8)
    x = torch.rand(16, 3, 16, 16) * 2 - 1
    mean, logvar = model.encode(x)
    total, rec, kl = autoencoder_loss(x, x, torch.zeros_like(mean), torch.zeros_like(mean))
    assert float(total) == float(rec) == float(kl) == 0.0  # a perfect, N(0, I) posterior
    model.scale_factor.fill_(estimate_scale(model, x))
    z = encode_latents(model, x)
    assert float(z.std()) == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(decode_latents(model, z), model.decode(mean).detach(), atol=1e-5)
    assert latent_picture(z, 16).shape == (16, 3, 16, 16)  # 4 channels in a 2x2 mosaic
    before = fingerprint(model.state_dict())
    model.scale_factor.fill_(2.0)
    assert fingerprint(model.state_dict()) != before


def test_run_folder_grid_and_psnr(autoencoder_run):
    names = {p.name for p in autoencoder_run.iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.jsonl", "reconstructions.png",
            "autoencoder.json"} <= names
    summary = json.loads((autoencoder_run / "autoencoder.json").read_text())
    model, state, _ = load_autoencoder(autoencoder_run)
    assert summary["step"] == state["step"] == 6 and summary["held_out"] == 3
    assert summary["psnr_db"] == pytest.approx(state["psnr_db"]) and summary["psnr_db"] > 0
    assert float(model.scale_factor) == pytest.approx(summary["scale_factor"])
    with pytest.raises(MinidiffError, match="not a run checkpoint"):
        load_checkpoint(autoencoder_run / "checkpoint.pt")  # not a diffusion run


def test_grid_puts_each_original_above_its_reconstruction():
    images, rebuilt = -torch.ones(5, 3, 2, 2), torch.ones(5, 3, 2, 2)
    contexts = torch.eye(3)[[0, 1, 1, 2, 0]]
    pixels, nrow = reconstruction_grid(images, rebuilt, contexts)
    assert nrow == 3  # one column per class
    top = pixels[:, 0, 0, 0].reshape(-1, 3)  # rows of the grid: original, rebuilt, original, ...
    assert top[0].tolist() == [0, 0, 0] and top[1].tolist() == [255, 255, 255]


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, autoencoder_run):
    def crash(step):
        if step == 5:
            raise RuntimeError("simulated crash")

    out = tmp_path / "ae"
    with pytest.raises(RuntimeError, match="simulated"):
        train_autoencoder(tiny_autoencoder(out), on_step=crash)
    assert load_autoencoder(out)[1]["step"] == 3
    train_autoencoder(tiny_autoencoder(out, resume=True))
    resumed, straight = load_autoencoder(out)[1], load_autoencoder(autoencoder_run)[1]
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_latent_run_samples_and_decodes_itself(latent_run):
    config = json.loads((latent_run / "config.json").read_text())
    assert config["unet"]["in_channels"] == 4 and config["unet"]["height"] == 8
    assert config["autoencoder"]["latent_shape"] == [4, 8, 8]
    pipe = minidiff.load(latent_run, device="cpu")
    assert pipe.sample_shape == (4, 8, 8) and pipe.image_shape == (3, 32, 32)
    images, frames = pipe.sample(3, steps=2, return_intermediates=True)
    assert images.shape == (3, 3, 32, 32)
    assert frames.shape == (2, 3, 3, 32, 64)  # each frame: the latent beside its decoding
    assert torch.equal(frames[-1][..., 32:], images)


def test_a_gone_or_retrained_autoencoder_is_one_line(tmp_path, autoencoder_run, latent_run):
    ae, run = tmp_path / "elsewhere" / "ae", tmp_path / "run"
    shutil.copytree(latent_run, run, ignore=shutil.ignore_patterns(".lock"))
    record = json.loads((run / "config.json").read_text())["autoencoder"]
    shutil.copytree(autoencoder_run, ae)
    shutil.move(autoencoder_run, tmp_path / "moved")
    try:
        with pytest.raises(MinidiffError, match="which is gone") as error:
            minidiff.load(run, device="cpu")
        assert "\n" not in str(error.value) and record["run"] in str(error.value)
        shutil.copytree(ae, tmp_path / "ae")  # beside the run, as when both are moved: found
        assert minidiff.load(run, device="cpu").decoder is not None
        train_autoencoder(tiny_autoencoder(tmp_path / "ae", resume=True, steps=7))
        with pytest.raises(MinidiffError, match="was retrained after"):
            minidiff.load(run, device="cpu")
    finally:
        shutil.move(tmp_path / "moved", autoencoder_run)


def test_diffusion_on_latents_needs_the_autoencoders_image_size(tmp_path, autoencoder_run):
    with pytest.raises(MinidiffError, match="trained on 32 px images .* pass --image-size 32"):
        train(tiny(tmp_path / "run", autoencoder=str(autoencoder_run), image_size=16))
    assert not (tmp_path / "run").exists()


def test_fused_sampling_decodes_the_same_images(latent_run):
    pytest.importorskip("triton")
    pipe = minidiff.load(latent_run, device="cpu")
    fused = pipe.sample(2, steps=2, fused=True)
    assert fused.shape == (2, 3, 32, 32)
    assert torch.allclose(fused, pipe.sample(2, steps=2), atol=1e-4)
