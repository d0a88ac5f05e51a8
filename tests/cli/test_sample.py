"""`python -m minidiff sample`: every flag on a tiny untrained checkpoint, and bad input, each
refused in one line with exit code 2 (a checkpoint crafted to run code on load included)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.checkpoint import save_checkpoint
from minidiff.cli import main

from sampling_runs import SCHEDULE, write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "tiny")


def run_cli(argv) -> int:
    """The exit code of `minidiff ...`, whether argparse (SystemExit) or the command refused."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def sample(run, tmp_path, *flags):
    return run_cli(["sample", "--run", str(run), "--device", "cpu", *flags])


def test_grid_npy_and_contexts(run, tmp_path, capsys):
    out, npy = tmp_path / "grid.png", tmp_path / "s.npy"
    code = sample(run, tmp_path, "--n", "6", "--steps", "5", "--class", "hero,2", "--seed", "4",
                  "--out", str(out), "--npy", str(npy), "--normalize", "per-image")
    assert code == 0
    assert "6 sprites, one column per class (hero, 2): SDE-DPM-Solver++(2M) 5 steps, seed 4" in \
        capsys.readouterr().out
    pixels, contexts = np.load(npy), np.load(tmp_path / "s_contexts.npy")
    assert pixels.shape == (6, 16, 16, 3) and pixels.dtype == np.uint8
    assert contexts.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]] * 3
    assert Image.open(out).size == (4 * (2 * 17 + 1), 4 * (3 * 17 + 1))  # a column per class
    sample(run, tmp_path, "--n", "6", "--steps", "5", "--class", "hero,2", "--seed", "4",
           "--out", str(out), "--npy", str(tmp_path / "again.npy"), "--normalize", "per-image",
           "--overwrite")
    assert np.array_equal(np.load(tmp_path / "again.npy"), pixels)  # a seed reproduces


def test_ddpm_gif_mix_guidance(run, tmp_path):
    gif, npy = tmp_path / "denoise.gif", tmp_path / "m.npy"
    assert sample(run, tmp_path, "--sampler", "ddpm", "--n", "2", "--gif", str(gif),
                  "--mix", "hero=1,food=0.6", "--mix", "1,0,0,0,1", "--guidance", "2",
                  "--out", str(tmp_path / "m.png"), "--npy", str(npy), "--weights", "model") == 0
    animation = Image.open(gif)
    assert animation.n_frames == 32 and animation.info["duration"] == 200  # course: 5 fps
    assert np.load(tmp_path / "m_contexts.npy").tolist() == [[1, 0, 0.6000000238418579, 0, 0],
                                                             [1, 0, 0, 0, 1]]


def test_no_noise_ddim_options_and_save_every(run, tmp_path):
    gif = tmp_path / "d.gif"
    assert sample(run, tmp_path, "--sampler", "ddim", "--steps", "10", "--eta", "0.5",
                  "--spacing", "uniform", "--gif", str(gif), "--save-every", "5",
                  "--out", str(tmp_path / "d.png")) == 0
    assert Image.open(gif).n_frames == 2
    assert sample(run, tmp_path, "--sampler", "ddpm-no-noise", "--n", "1", "--ckpt",
                  str(run / "checkpoint.pt"), "--out", str(tmp_path / "x.png")) == 2  # both


def test_newest_run_is_the_default(run, tmp_path, monkeypatch, capsys):
    write_run(tmp_path / "runs" / "latest")
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--n", "1", "--steps", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {Path('runs') / 'latest'} (the newest under runs/)")
    assert (tmp_path / "runs" / "latest" / "samples" / "dpm++2m-sde-1-seed0.png").is_file()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="no Triton")
def test_fused_says_it_runs_in_the_interpreter(run, tmp_path, capsys):
    base = ["--n", "2", "--steps", "3", "--out", str(tmp_path / "x.png")]
    assert sample(run, tmp_path, *base, "--npy", str(tmp_path / "t.npy")) == 0
    assert sample(run, tmp_path, *base, "--npy", str(tmp_path / "f.npy"), "--fused",
                  "--overwrite") == 0
    out = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert "--fused: no CUDA GPU here, so the Triton kernels run through the Triton " \
               "interpreter" in out
    difference = np.load(tmp_path / "t.npy").astype(int) - np.load(tmp_path / "f.npy")
    assert np.abs(difference).max() <= 1


def test_fused_without_triton_is_one_line(run, tmp_path):
    code = ("import sys; sys.modules['triton'] = None; from minidiff.cli import main; "
            f"sys.exit(main(['sample', '--run', {str(run)!r}, '--fused', '--n', '1', "
            f"'--out', {str(tmp_path / 'x.png')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("minidiff sample: error: --fused needs Triton, which is not "
                                     "installed here (pip install triton; Linux only); sample "
                                     "without --fused")


# --- bad input: one line, exit 2 ---------------------------------------------------------------

BAD_FLAGS = [
    (["--class", "dragon"], "unknown class 'dragon'; this run's classes are hero, non-hero"),
    (["--class", "7"], r"class index 7 is outside \[0, 4\]"),
    (["--class", ","], "--class ',' names no class"),
    (["--mix", "hero=abc"], "--mix weight of hero 'abc' is not a number"),
    (["--mix", "wizard=1"], "unknown class 'wizard'"),
    (["--mix", "1,2"], "a mix vector needs 5 numbers"),
    (["--mix", "hero=1,2"], "mixes NAME=W and bare numbers"),
    (["--mix", ","], "is empty"),
    (["--mix", "hero=1e30"], r"--mix weight of hero '1e30' is outside the valid range \[-2, 2\]"),
    (["--mix", "1,0,0,0,inf"], r"--mix weight 'inf' is outside the valid range \[-2, 2\]"),
    (["--class", "hero", "--mix", "food=1"], "give --class or --mix, not both"),
    (["--guidance", "lots", "--class", "hero"], "argument --guidance: 'lots' is not a number"),
    (["--guidance", "nan", "--class", "hero"], "--guidance: nan is not a finite number"),
    (["--guidance", "1e30"], r"--guidance: 1e30 is too large: it must be <= 20 \(past about 10"),
    (["--guidance", "-1"], "--guidance: -1 is too small: it must be >= 0"),
    (["--n", "0"], "argument --n: 0 is too small: it must be >= 1"),
    (["--n", "100001"], "argument --n: 100001 is too large: it must be <= 100,000"),
    (["--n", "many"], "argument --n: 'many' is not a whole number"),
    (["--batch-size", "0"], "argument --batch-size: 0 is too small: it must be >= 1"),
    (["--threads", "100000"], r"--threads: 100000 is too large: it must be <= \d+ \(this machine"),
    (["--seed", "-1"], "argument --seed: -1 is too small: it must be >= 0"),
    (["--seed", str(2**32)], "argument --seed: 4294967296 is too large"),
    (["--seed", "1e23"], "argument --seed: 1e23 is too large"),
    (["--steps", "0"], "argument --steps: 0 is too small: it must be >= 1"),
    (["--steps", "501"], "--steps 501 is too large: it must be <= 500, the run's T"),
    (["--steps", "2.5"], "argument --steps: '2.5' is not a whole number"),
    (["--sampler", "ddpm", "--steps", "50"], "--steps is for --sampler ddim"),
    (["--sampler", "ddpm", "--eta", "1"], "--eta is for --sampler ddim"),
    (["--eta", "1.5"], "argument --eta: 1.5 is too large: it must be <= 1"),
    (["--sampler", "euler"], "argument --sampler: 'euler' is not one of ddim, ddpm"),
    (["--spacing", "log"], "argument --spacing: 'log' is not one of "),
    (["--sampler", "ddim", "--spacing", "trailing"],
     "error: --spacing 'trailing' is not one of course, uniform"),
    (["--normalize", "gamma"], "argument --normalize: 'gamma' is not one of clip, per-image"),
    (["--weights", "best"], "argument --weights: 'best' is not one of ema, model"),
    (["--save-every", "0"], "argument --save-every: 0 is too small: it must be >= 1"),
    (["--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda, mps"),
    (["--out", "x.jpg"], "x.jpg: minidiff writes this as PNG; give a name ending in .png"),
    (["--gif", "x.png"], "x.png: minidiff writes this as GIF"),
    (["--npy", "x.png"], "x.png: minidiff writes this as NPY"),
    (["--n", "1025", "--gif"], "--gif animates every sprite: use --n <= 1024 with it"),
]


def assert_one_line_error(code, capsys, message):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("minidiff sample: error: "), err
    assert re.search(message, err), err


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags(run, tmp_path, capsys, flags, message):
    fast = [] if "--steps" in flags or "ddpm" in flags else ["--steps", "1"]
    out = [] if "--out" in flags else ["--out", str(tmp_path / "x.png")]
    code = sample(run, tmp_path, *fast, *out, *flags)
    assert_one_line_error(code, capsys, message)
    assert not (tmp_path / "x.png").exists()


def test_bad_outputs(run, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert_one_line_error(sample(run, tmp_path, "--out", str(tmp_path)), capsys, "is a folder")
    code = sample(run, tmp_path, "--gif", str(tmp_path / "file" / "a.gif"))
    assert_one_line_error(code, capsys, "is a file, not a folder")


def test_unconditional_run_refuses_classes(tmp_path, capsys):
    plain = write_run(tmp_path / "plain", n_cfeat=0)
    code = sample(plain, tmp_path, "--class", "hero", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, capsys, r"--class: this run was trained without classes \(n_cfeat")
    code = sample(plain, tmp_path, "--guidance", "2", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, capsys, "--guidance needs a run trained with classes")


def test_bad_checkpoints(run, tmp_path, capsys, monkeypatch):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "checkpoint.pt").read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, {"config": {"unet": {"n_feat": 8, "colour": 1}, "schedule": SCHEDULE},
                            "model": {}})
    cases = [
        (["--run", str(tmp_path / "missing")], "no checkpoint at .*missing: pass a run folder"),
        (["--ckpt", str(truncated)], "truncated or corrupted"),
        (["--ckpt", str(foreign)], "is not a minidiff checkpoint"),
        (["--ckpt", str(wrong)], "does not match this minidiff's network"),
    ]
    for flags, message in cases:
        assert_one_line_error(main(["sample", *flags, "--out", str(tmp_path / "x.png")]),
                              capsys, message)
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(main(["sample"]), capsys, "no trained run found: looked for")


class RunsCode:
    """Unpickling this calls open(marker, "w"): it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_checkpoint_does_not_run_code(tmp_path, capsys):
    marker, crafted = tmp_path / "pwned", tmp_path / "crafted.pt"
    torch.save({"format": "minidiff-checkpoint", "model": RunsCode(marker)}, crafted)
    code = main(["sample", "--ckpt", str(crafted), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(code, capsys, "was refused: it holds objects other than tensors")
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the file really is an exploit: an unsafe load
    assert marker.exists()  # runs its code
