"""`python -m minidiff train-autoencoder`, and `train --autoencoder` then `sample` and `eval` on
the latent run: the whole way in-process, and bad input as one line with exit code 2."""

import json

import numpy as np
import pytest
from PIL import Image

from minidiff import cli
from minidiff.data.resize import enlarge
from minidiff.data.sprites import CLASSES, make_sprites

from tiny_runs import TINY

AE_TINY = ["--n-images", "64", "--n-feat", "8", "--batch-size", "8", "--no-progress",
           "--device", "cpu", "--threads", "1"]


def run(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stderr, stdout) of `minidiff ...`, whether argparse or the command refused."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An autoencoder run and a latent diffusion run on it, made by the commands."""
    root = tmp_path_factory.mktemp("latent_cli")
    assert cli.main(["train-autoencoder", *AE_TINY, "--steps", "4", "--out",
                     str(root / "ae")]) == 0
    assert cli.main(["train", *TINY, "--autoencoder", str(root / "ae"), "--steps", "3",
                     "--out", str(root / "run")]) == 0
    return root


@pytest.mark.parametrize("argv, says", [
    (["--factor", "3"], "factor=3 is not a power of 2"),
    (["--factor", "32"], "--factor: 32 is too large: it must be <= 16"),
    (["--image-size", "16", "--factor", "8"], "does not shrink 8 times to a latent of at least 4"),
    (["--loss", "huber"], "--loss: 'huber' is not one of l1, mse"),
    (["--kl-weight", "-1"], "--kl-weight: -1 is too small"),
    (["--resume"], "--resume needs the run to continue"),
])
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys):
    code, err, _ = run(["train-autoencoder", *argv], capsys)
    assert code == 2 and says in err
    assert len(err.splitlines()) == 1, err


def test_the_autoencoder_run_prints_and_keeps_its_psnr(runs, capsys):
    summary = json.loads((runs / "ae" / "autoencoder.json").read_text())
    assert summary["step"] == 4 and summary["psnr_db"] > 0
    code, err, out = run(["train-autoencoder", "--resume", str(runs / "ae"), *AE_TINY], capsys)
    assert code == 0 and "is finished: it trained all 4 steps" in out
    code, err, out = run(["train-autoencoder", "--resume", str(runs / "ae"), "--steps", "3",
                          *AE_TINY], capsys)
    assert code == 2 and "already at step 4; pass --steps above 4" in err
    code, err, _ = run(["train-autoencoder", "--resume", str(runs / "ae"), "--steps", "5",
                        "--latent-channels", "8", *AE_TINY], capsys)
    assert code == 2 and "trained with latent_channels=4, not 8" in err


def test_train_on_latents_takes_the_autoencoders_size_and_patch_1(runs):
    config = json.loads((runs / "run" / "config.json").read_text())
    assert config["train"]["image_size"] == 32  # from the autoencoder: no --image-size given
    assert config["unet"]["height"] == 8 and config["unet"]["in_channels"] == 4
    assert config["unet"]["patch"] == 1  # an 8x8 latent, cell by cell


def test_train_refuses_a_missing_autoencoder(tmp_path, capsys):
    code, err, _ = run(["train", *TINY, "--autoencoder", str(tmp_path / "none"), "--out",
                        str(tmp_path / "run")], capsys)
    assert code == 2 and "no checkpoint.pt there" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_sample_decodes_a_latent_run_with_a_gif(runs, capsys):
    code, err, out = run(["sample", "--run", str(runs / "run"), "--steps", "2", "--n", "5",
                          "--gif", "--npy"], capsys)
    assert code == 0, err
    pixels = np.load(runs / "run" / "samples" / "ddim-2-seed0.npy")
    assert pixels.shape == (5, 32, 32, 3)  # decoded images, not latents
    gif = Image.open(runs / "run" / "samples" / "ddim-2-seed0.gif")
    png = Image.open(runs / "run" / "samples" / "ddim-2-seed0.png")
    assert gif.size[0] > png.size[0] and gif.size[1] == png.size[1]  # latent beside image


def test_eval_measures_decoded_samples(runs, tmp_path, capsys, monkeypatch):
    """On 64 sprites at 32 px saved as the course's .npy (all 20,000 would take half a minute)."""
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    pixels, index = make_sprites(64, 0)
    np.save(tmp_path / "sp_32x32.npy", enlarge(pixels, 32))
    np.save(tmp_path / "sp_labels.npy", np.eye(len(CLASSES), dtype=np.float32)[index])
    (tmp_path / "sp_classes.json").write_text(json.dumps(list(CLASSES)))
    code, err, out = run(["eval", "--run", str(runs / "run"), "--steps", "1", "--n", "8",
                          "--data", str(tmp_path / "sp_32x32.npy"), "--labels",
                          str(tmp_path / "sp_labels.npy"), "--classifier-steps", "2",
                          "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n_samples"] == 8 and result["fid"] >= 0


def test_pixel_space_trains_at_32_too(tmp_path, capsys):
    """The other side of the comparison: the same network on 32x32 pixels."""
    code, err, _ = run(["train", *TINY, "--image-size", "32", "--steps", "2", "--out",
                        str(tmp_path / "run")], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["unet"]["height"] == 32 and "autoencoder" not in config


def fake_clock_run(tmp_path, monkeypatch, seconds_of_step, **settings):
    """train_autoencoder --minutes 1 on a fake clock: step i takes seconds_of_step(i)."""
    from types import SimpleNamespace

    from minidiff.autoencoder_config import AutoencoderConfig
    from minidiff.training import autoencoder_trainer as module

    clock = {"now": 0.0}
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    step = module.AutoencoderTrainer.train_step

    def timed_step(self, i):
        clock["now"] += seconds_of_step(i)
        return step(self, i)

    monkeypatch.setattr(module.AutoencoderTrainer, "train_step", timed_step)
    trainer = module.train_autoencoder(AutoencoderConfig(
        n_images=64, n_feat=8, batch_size=8, steps=None, minutes=1, progress=False,
        checkpoint_every=0, device="cpu", threads=1, out=str(tmp_path / "ae"), **settings))
    return trainer.step, clock["now"]


def test_minutes_fit_the_steps_to_the_rate_after_the_warm_up_step(tmp_path, monkeypatch):
    """The first step takes 10 s, every later one 1 s: the steps fill 95% of the minute at
    1 step/s, 57 s, 10 + 47 steps (timing the slow first step too would have fitted 20)."""
    steps, seconds = fake_clock_run(tmp_path, monkeypatch, lambda i: 10.0 if i == 0 else 1.0)
    assert (steps, seconds) == (48, 57.0)


def test_minutes_fit_again_when_the_steps_slow_down(tmp_path, monkeypatch):
    """From step 31 on a step takes 2 s, not 1: the fit at every log line (each 5 steps here)
    stops the run at 59 s, one log line past the 57 s aimed at, where the first fit alone
    (48 steps) would have run to 75 s."""
    steps, seconds = fake_clock_run(tmp_path, monkeypatch,
                                    lambda i: 10.0 if i == 0 else 1.0 if i < 30 else 2.0,
                                    log_every=5)
    assert (steps, seconds) == (40, 59.0)
