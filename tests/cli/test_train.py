"""`python -m minidiff train` with bad input: exit code 2, one line naming the problem and the
fix, and nothing written or lost; its help shows every default."""

import argparse
from pathlib import Path

import pytest

from minidiff import cli
from minidiff.cli import flags
from minidiff.cli.train import config_from_args

TINY = ["--n-images", "32", "--n-feat", "8", "--batch-size", "8", "--sample-every", "0",
        "--no-progress", "--device", "cpu", "--threads", "1"]


def run_cli(argv, capsys):
    """(exit code, stderr) of `minidiff train ...`, whether argparse or the command refused."""
    try:
        code = cli.main(["train", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


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
    assert "--steps N optimizer steps (default: 1,500)" in help_text
    assert "--lr X peak learning rate" in help_text and "(default: 0.004)" in help_text
    assert "--hflip, --no-hflip mirror half the images left-right (default: off)" in help_text


def _subparser(name: str):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]
