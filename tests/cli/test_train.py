"""`python -m minidiff train` with bad input: exit code 2, one line naming the problem and the
fix, and nothing written or lost; its help shows every default."""

import argparse
import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from minidiff import cli
from minidiff.checkpoint import load_checkpoint
from minidiff.cli import flags
from minidiff.cli.train import config_from_args
from minidiff.training import trainer as trainer_module
from minidiff.training.runs import MetricsLog

from tiny_runs import TINY, run_train


def run_cli(argv, capsys):
    """(exit code, stderr) of `minidiff train ...`."""
    return run_train(argv, capsys)[:2]


@pytest.mark.parametrize("argv, says", [
    (["--steps", "0"], "--steps: 0 is too small: it must be >= 1"),
    (["--steps", "-5"], "--steps: -5 is too small"),
    (["--steps", "ten"], "--steps: 'ten' is not a whole number"),
    (["--batch-size", "2.5"], "--batch-size: '2.5' is not a whole number"),
    (["--lr", "fast"], "--lr: 'fast' is not a number"),
    (["--lr=-1e-3"], "--lr: -1e-3 is too small: it must be > 0"),
    (["--minutes", "nan"], "--minutes: nan is not a finite number: it must be > 0"),
    (["--ema-decay", "1"], "--ema-decay: 1 is too large: it must be < 1"),
    (["--steps", "3", "--epochs", "2"], "not allowed with argument"),
    (["--arch", "resnet"], "--arch: 'resnet' is not one of minidiff, course"),
])
def test_bad_numbers_and_choices_are_refused_in_one_line(argv, says, capsys):
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert says in err
    assert len(err.splitlines()) == 1, err


def test_batch_larger_than_the_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli([*TINY, "--batch-size", "64", "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "--batch-size 64 is larger than the data (32 images)" in err
    assert not out.exists()


def test_existing_output_folder_needs_resume_and_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, err = run_cli([*TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "already exists; pass --resume" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_cli([*TINY, "--steps", "2", "--out", str(blocker / "run")], capsys)
    assert code == 2 and "cannot write the output folder" in err


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli([*TINY, "--steps", "2", "--out", str(out)], capsys)[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    code, err = run_cli(["--resume", "--out", str(out), "--arch", "course"], capsys)
    assert code == 2 and "holds a minidiff network" in err and "train into a new --out" in err
    code, err = run_cli(["--resume", "--out", str(out), "--n-feat", "16"], capsys)
    assert code == 2 and "n_feat 8" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint(tmp_path, capsys):
    code, err = run_cli(["--resume", "--out", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no checkpoint.pt in" in err
    code, err = run_cli(["--resume"], capsys)
    assert code == 2 and "--resume needs the run to continue" in err


def test_flags_override_the_preset_and_lengths_replace_each_other():
    config = config_from_args(cli.build_parser().parse_args(
        ["train", "--preset", "course", "--epochs", "1", "--n-images", "300"]))
    assert (config.arch, config.optimizer, config.epochs, config.steps) == ("course", "adam", 1,
                                                                           None)
    config = config_from_args(cli.build_parser().parse_args(["train", "--minutes", "2"]))
    assert (config.minutes, config.steps, config.epochs) == (2, None, None)  # fitted to 2 min
    config = config_from_args(cli.build_parser().parse_args(["train", "--out", "x"]))
    assert config.steps is not None and Path(config.out) == Path("x")


def test_help_shows_every_default(capsys):
    train = _subparser("train")
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            text = flags.DefaultsFormatter("minidiff train")._get_help_string(action)
            assert "default" in text, f"{action.option_strings[0]} shows no default: {text!r}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--steps N optimizer steps (default: 2,500)" in help_text
    assert "--lr X peak learning rate" in help_text and "(default: 0.004)" in help_text
    assert "--hflip, --no-hflip mirror half the images left-right (default: off)" in help_text


def _subparser(name: str):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


# %% issue 13: divergence, full disks, bounds, resumed lengths; issue 16: a finished run

def test_divergence_stops_naming_the_cause_and_keeps_only_finite_checkpoints(tmp_path, capsys):
    """Case 2: AdamW at lr 0.99 with weight decay 1e6 multiplies the weights by -1e6 a step. The run
    stops with a line naming --weight-decay, and the checkpoint left behind is finite (step 1's;
    by step 5 the weights are inf, and that checkpoint is never written)."""
    out = tmp_path / "run"
    code, err = run_cli([*TINY, "--lr", "0.99", "--grad-clip", "0", "--warmup-steps", "0",
                         "--lr-schedule", "constant", "--weight-decay", "1000000", "--steps",
                         "100", "--checkpoint-every", "1", "--log-every", "25", "--out",
                         str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training diverged, likely from --weight-decay 1e+06" in err
    assert "--grad-clip 0" in err and "is kept" in err
    state = load_checkpoint(out / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert f"step {state['step']}, finite" in err


@pytest.mark.parametrize("errno_, says", [(errno.ENOSPC, "No space left on device): free some "
                                           "space, or pass another --out"),
                                          (errno.EROFS, "Read-only file system): check its "
                                           "permissions")])
def test_a_full_disk_or_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys, errno_, says):
    """Case 8: the write of a checkpoint, a metrics line or the config fails: one line, exit 2."""
    out = tmp_path / "run"

    def fail(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(trainer_module, "save_checkpoint", fail)
    code, err = run_cli([*TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot write checkpoint.pt in {out} ({says}" in err
    monkeypatch.undo()
    monkeypatch.setattr(MetricsLog, "write", fail)
    code, err = run_cli([*TINY, "--steps", "2", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "cannot write metrics.jsonl" in err and says in err
    monkeypatch.undo()
    monkeypatch.setattr(trainer_module.runs, "write_config", fail)
    code, err = run_cli([*TINY, "--steps", "2", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "cannot write the run folder" in err and says in err
    assert not (tmp_path / "c").exists()  # no empty run folder left behind


@pytest.mark.parametrize("argv, says", [
    (["--seed", "1e23"], "--seed: 1e23 is too large: it must be <= 4,294,967,295"),
    (["--threads", "100000"], "--threads: 100000 is too large: it must be <="),
    (["--image-size", "100000"], "--image-size: 100000 is too large: it must be <= 128"),
    (["--timesteps", "2000000000"], "--timesteps: 2000000000 is too large: it must be <= 10,000"),
    (["--n-images", "1000000000"], "--n-images: 1000000000 is too large: it must be <= 1,000,000"),
])
def test_size_like_flags_are_bounded_and_nothing_is_written(tmp_path, argv, says, capsys):
    """Cases 7 and 9: out-of-range sizes (and the seed) are one line before any folder exists."""
    out = tmp_path / "run"
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 2 and says in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run trained to its end on 2 threads."""
    out = tmp_path_factory.mktemp("finished") / "run"
    flags_ = [a for a in TINY if a not in ("--threads", "1")] + ["--threads", "2"]
    assert cli.main(["train", *flags_, "--steps", "4", "--log-every", "2", "--out", str(out)]) == 0
    return out


def test_resume_with_fewer_steps_than_done_is_refused_and_changes_nothing(finished_run, capsys):
    """Case 9: `--resume --steps 2` on a 4-step run: refused, config.json untouched."""
    before = (finished_run / "config.json").read_bytes()
    code, err = run_cli(["--resume", "--out", str(finished_run), "--steps", "2"], capsys)
    assert code == 2 and "--steps 2: the run in" in err and "already at step 4" in err
    assert "pass --steps above 4" in err
    assert (finished_run / "config.json").read_bytes() == before


def test_resuming_a_finished_run_says_so_and_how_to_extend_it(finished_run, capsys):
    """Issue 16 item 3: exit 0, no "loss nan", nothing rewritten."""
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    code = cli.main(["train", "--resume", "--out", str(finished_run)])
    captured = capsys.readouterr()
    assert code == 0 and "nan" not in captured.out + captured.err
    assert f"{finished_run} is finished: it trained all 4 steps" in captured.out
    assert f"--resume --out {finished_run} --steps 8" in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_resuming_with_another_thread_count_is_allowed_with_a_note(finished_run, capsys):
    """Case 9: --threads is a session flag; the note says the result is not bit-for-bit."""
    code = cli.main(["train", "--resume", "--out", str(finished_run), "--steps", "6",
                     "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "note: --threads 1 differs from the 2 this run trained with" in printed
    assert "not be bit-for-bit" in printed
    assert load_checkpoint(finished_run / "checkpoint.pt")["step"] == 6


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, nearly full (needs mount rights: root in a container; else skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mount / "filler").write_bytes(bytes(2_500_000))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_leaves_no_temporary(small_disk, capsys):
    """Case 8 on a real full disk: torch.save fails mid-checkpoint (n_feat 64: 6 MB)."""
    out = small_disk / "run"
    code, err = run_cli([*TINY, "--n-feat", "64", "--steps", "2", "--checkpoint-every", "1",
                         "--out", str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot write checkpoint.pt" in err and "No space left on device" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.json"]
