"""Where `sample`, `eval` and `data` write (minidiff/cli/outputs.py): the run's folder by default,
never over an earlier output or an input, checked before the work, all files or none (issue 13
items 3, 7, 8, 9; issue 16 items 1, 2, 5, 6, 7)."""

import errno
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.cli import main
from minidiff.pipeline import Pipeline

from sampling_runs import write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run")


def cli(*argv) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def one_line(capsys, command="sample") -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"minidiff {command}: error: "), err
    return err


def test_sample_with_no_flags_shows_every_class_in_the_run_folder(run, capsys):
    assert cli("sample", "--run", str(run), "--steps", "2") == 0
    out = capsys.readouterr().out
    first = run / "samples" / "dpm++2m-sde-2-seed0.png"
    assert out.splitlines()[0] == f"run {run}, EMA weights"
    assert "40 sprites, one column per class (hero, non-hero, food, spell, side-facing): " \
           "SDE-DPM-Solver++(2M) 2 steps, seed 0" in out and f"wrote {first}" in out
    assert Image.open(first).size == (4 * (5 * 17 + 1), 4 * (8 * 17 + 1))  # 5 columns, 8 rows
    before = first.read_bytes()
    assert cli("sample", "--run", str(run), "--steps", "2", "--seed", "0") == 0
    assert f"wrote {run / 'samples' / 'dpm++2m-sde-2-seed0-2.png'}" in capsys.readouterr().out
    assert first.read_bytes() == before  # the earlier output is kept


def test_unconditional_grid_has_no_half_empty_row(tmp_path):
    plain = write_run(tmp_path / "plain", n_cfeat=0)
    assert cli("sample", "--run", str(plain), "--steps", "1") == 0
    grid = Image.open(plain / "samples" / "dpm++2m-sde-1-seed0.png")
    assert grid.size == (4 * (8 * 17 + 1), 4 * (4 * 17 + 1))  # 32 sprites: 8 columns, 4 rows


def test_gif_and_npy_go_beside_the_png_and_the_last_frame_is_the_png(run):
    assert cli("sample", "--run", str(run), "--steps", "3", "--class", "hero", "--n", "1",
               "--gif", "--npy") == 0
    stem = run / "samples" / "dpm++2m-sde-3-hero-seed0"
    png = np.asarray(Image.open(f"{stem}.png").convert("RGB")).astype(int)
    gif = Image.open(f"{stem}.gif")
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("RGB")).astype(int)
    colours = len(np.unique(png.reshape(-1, 3), axis=0))
    if colours <= 256:  # a GIF frame holds 256 colours: then the frame is the PNG exactly
        assert np.array_equal(last, png)
    else:
        assert np.abs(last - png).mean() < 2, colours
    assert np.load(f"{stem}.npy").shape == (1, 16, 16, 3)
    assert np.load(f"{stem}_contexts.npy").tolist() == [[1, 0, 0, 0, 0]]


def test_outputs_never_replace_an_input_or_each_other(run, capsys):
    checkpoint = run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    assert cli("sample", "--run", str(run), "--out", str(checkpoint)) == 2
    assert "is " + str(checkpoint) + ", an input of this command" in one_line(capsys)
    assert cli("sample", "--run", str(run), "--npy", str(run / ".." / "run" / "checkpoint.pt")) == 2
    assert "an input of this command" in one_line(capsys)
    assert checkpoint.read_bytes() == before
    png = run / "x.png"
    assert cli("sample", "--run", str(run), "--out", str(png), "--gif", str(png)) == 2
    assert "--gif and --out both name" in one_line(capsys)
    assert not png.exists()


def test_a_path_that_exists_is_refused_without_overwrite(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"earlier")
    assert cli("sample", "--run", str(run), "--steps", "1", "--out", str(out)) == 2
    assert "already exists: pass --overwrite" in one_line(capsys)
    assert out.read_bytes() == b"earlier"
    assert cli("sample", "--run", str(run), "--steps", "1", "--out", str(out), "--overwrite") == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def refuse_writes_in(monkeypatch, folder, code):
    """Make every os.open of a path inside `folder` fail with `code` (a read-only file system),
    and any sampling a test failure: the refusal must come first."""
    real_open = os.open

    def guarded(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    monkeypatch.setattr(Pipeline, "sample", lambda *a, **k: pytest.fail("sampled first"))


@pytest.mark.parametrize("flag", ["--out", "--npy"])
def test_a_read_only_folder_fails_before_sampling(run, tmp_path, capsys, monkeypatch, flag):
    folder = tmp_path / "read-only"
    folder.mkdir()
    target = folder / ("x.png" if flag == "--out" else "x.npy")
    refuse_writes_in(monkeypatch, folder, errno.EROFS)
    assert cli("sample", "--run", str(run), flag, str(target)) == 2
    assert re.search(f"{flag}: cannot write in .*read-only \\(Read-only file system\\)",
                     one_line(capsys))
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_chmod_read_only_folder_fails_before_sampling(run, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    assert cli("sample", "--run", str(run), "--out", str(folder / "x.png")) == 2
    assert "cannot write in" in one_line(capsys)


def test_a_full_disk_leaves_no_output_and_one_line(run, tmp_path, capsys,
                                                  disk_full_at_second_fsync):
    """ENOSPC injected at the second file's fsync: neither the PNG nor the .npy is left."""
    out = tmp_path / "out"
    assert cli("sample", "--run", str(run), "--steps", "1", "--n", "2", "--out",
               str(out / "x.png"), "--npy", str(out / "x.npy")) == 2
    assert "no space left on the device); none of this command's outputs were written" in \
        one_line(capsys)
    assert list(out.iterdir()) == []  # no PNG, no .npy, no temporaries


def test_sampling_is_batched(run, tmp_path, monkeypatch):
    from minidiff import samplers as sampling

    sizes, real_loop = [], sampling.sample_loop

    def recording(model, schedule, shape, *args, **kwargs):
        sizes.append(shape[0])
        return real_loop(model, schedule, shape, *args, **kwargs)

    monkeypatch.setattr("minidiff.pipeline.sample_loop", recording)
    assert cli("sample", "--run", str(run), "--steps", "1", "--n", "7", "--batch-size", "3",
               "--out", str(tmp_path / "x.png"), "--npy", str(tmp_path / "x.npy")) == 0
    assert sizes == [3, 3, 1] and np.load(tmp_path / "x.npy").shape == (7, 16, 16, 3)


def test_threads_are_set_for_the_command_and_restored(run, tmp_path, monkeypatch):
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda k: (seen.append(k), real(k)))
    before = torch.get_num_threads()
    assert cli("sample", "--run", str(run), "--steps", "1", "--n", "1", "--threads", "1",
               "--out", str(tmp_path / "x.png")) == 0
    assert seen == [1, before] and torch.get_num_threads() == before


def test_eval_writes_into_the_run_folder_and_says_where_the_classifier_is(run, capsys,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    argv = ["eval", "--run", str(run), "--steps", "1", "--n", "4", "--classifier-steps", "2"]
    assert cli(*argv) == 0
    out = capsys.readouterr().out
    assert re.search(rf"feature classifier: {tmp_path}/cache/classifier-\S+\.pt \(trained now", out)
    result = json.loads((run / "eval" / "dpm++2m-sde-1-seed0.json").read_text())
    assert result["n_samples"] == 4 and result["threads"] == 1
    assert cli(*argv) == 0
    out = capsys.readouterr().out
    again = run / "eval" / "dpm++2m-sde-1-seed0-2.json"
    assert "(read from the cache" in out and f"wrote {again}" in out


def test_eval_names_only_its_own_flags(run, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--guidance" in text and not re.search(r"--class\b|--mix", text)
    assert cli("eval", "--run", str(run), "--json", str(run / "checkpoint.pt")) == 2
    assert "--json" in one_line(capsys, "eval")


def test_default_names_say_what_made_them():
    from minidiff.cli.outputs import made_by
    from minidiff.samplers import SamplerConfig

    T = 500
    assert made_by(SamplerConfig(sampler="ddim", steps=25, eta=1.0), T, "seed0") == \
        "ddim-25-eta1-seed0"
    assert made_by(SamplerConfig(sampler="ddim", steps=25, eta=0.0, guidance=2.0), T, "seed3",
                   classes=["hero", "food"]) == "ddim-25-eta0-g2-hero+food-seed3"
    assert made_by(SamplerConfig(sampler="ddpm"), T, "seed0", mix=["hero=1,food=0.6"]) == \
        "ddpm-500-mix-hero=1+food=0.6-seed0"
    assert made_by(SamplerConfig(sampler="dpm++2m", steps=10), T, "seeds0-4") == \
        "dpm++2m-10-seeds0-4"
    odd = made_by(SamplerConfig(sampler="ddim", steps=5), T, "seed0", classes=["a/b c"] * 40)
    assert "/" not in odd and " " not in odd and len(odd) <= 120 and odd.endswith("-seed0")


def test_captions_name_each_column_above_the_grid(run, tmp_path):
    plain, captioned = tmp_path / "plain.png", tmp_path / "captioned.png"
    argv = ["sample", "--run", str(run), "--steps", "2", "--class", "hero,food", "--n", "4"]
    assert cli(*argv, "--out", str(plain)) == 0
    assert cli(*argv, "--out", str(captioned), "--captions", "--gif") == 0
    a = np.asarray(Image.open(plain).convert("RGB"))
    b = np.asarray(Image.open(captioned).convert("RGB"))
    from minidiff.data.images import CAPTION_HEIGHT

    assert np.array_equal(b[CAPTION_HEIGHT:], a), "the grid itself is unchanged below the band"
    band = b[:CAPTION_HEIGHT]
    half = band.shape[1] // 2
    assert (band[:, :half] < 128).any() and (band[:, half:] < 128).any(), "a caption per column"
    assert not np.array_equal(band[:, :half], band[:, half:2 * half]), "different captions"
    gif = Image.open(captioned.with_suffix(".gif"))
    gif.seek(gif.n_frames - 1)
    assert np.asarray(gif.convert("RGB")).shape == b.shape
