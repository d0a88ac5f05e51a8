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
    assert code == 2 and "trained with latent_channels=4 but this run asks for 8" in err


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
    pixels = np.load(runs / "run" / "samples" / "dpm++2m-sde-2-seed0.npy")
    assert pixels.shape == (5, 32, 32, 3)  # decoded images, not latents
    gif = Image.open(runs / "run" / "samples" / "dpm++2m-sde-2-seed0.gif")
    png = Image.open(runs / "run" / "samples" / "dpm++2m-sde-2-seed0.png")
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
