"""The shared flag pieces (`minidiff.cli.flags`): flags made from settings, one-line argparse
types, and the formatter that shows every default."""

from dataclasses import dataclass

import pytest

from minidiff.cli import flags
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting


@dataclass
class Example:
    steps: int = setting(1500, "how many", low=1)
    eta: float = setting(0.0, "noise", low=0, high=1)
    mode: str = setting("ddim", "which", choices=("ddim", "ddpm"))
    fast: bool = setting(False, "go fast")
    name: str | None = setting(None, "what to call it (default: the date)")

    def __post_init__(self):
        check_settings(self)


def parser(only_given=False):
    p = flags.OneLineParser(prog="demo", formatter_class=flags.DefaultsFormatter)
    flags.add_settings(p, Example, only_given=only_given)
    p.add_argument("--n", type=flags.integer(low=1, high=100), default=32, help="how many images")
    return p


def test_flags_carry_the_fields_types_and_defaults():
    args = parser().parse_args(["--steps", "1e3", "--eta", "0.5", "--mode", "ddpm", "--fast"])
    assert Example(**flags.settings_from(args, Example)) == Example(1000, 0.5, "ddpm", True)
    assert flags.settings_from(parser(only_given=True).parse_args(["--eta", "1"]), Example) == {
        "eta": 1.0}


@pytest.mark.parametrize("argv, says", [
    (["--steps", "0"], "argument --steps: 0 is too small: it must be >= 1"),
    (["--eta", "2"], "argument --eta: 2 is too large: it must be <= 1"),
    (["--eta", "x"], "argument --eta: 'x' is not a number"),
    (["--mode", "dpm"], "argument --mode: 'dpm' is not one of ddim, ddpm"),
    (["--n", "101"], "argument --n: 101 is too large: it must be <= 100"),
])
def test_a_bad_value_is_one_line_naming_the_flag(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err == f"demo: error: {says} (see demo --help)"


def test_python_gets_the_same_rule():
    with pytest.raises(MinidiffError, match=r"^eta=2 is too large: it must be <= 1$"):
        Example(eta=2)


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        parser(only_given=True).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--steps N how many (default: 1,500)" in text
    assert "--mode {ddim,ddpm} which (default: ddim)" in text
    assert "--fast, --no-fast go fast (default: off)" in text
    assert "what to call it (default: the date)" in text and text.count("default") == 6
    assert "--n N how many images (default: 32)" in text
    assert flags.show_default(0.004) == "0.004" and flags.show_default(20000) == "20,000"


# Commands that go together take the same flag for the same thing: a learner who trains the
# autoencoder and then the latent diffusion model on it types one set of data flags.
TOGETHER = {("train", "train-autoencoder"): ["--data", "--labels", "--classes", "--n-images",
                                              "--image-size", "--threads", "--minutes", "--steps",
                                              "--batch-size", "--lr", "--warmup-steps", "--n-feat",
                                              "--seed", "--device", "--out", "--resume",
                                              "--log-every", "--checkpoint-every", "--progress"],
            ("sample", "eval"): ["--run", "--threads", "--seed", "--device"]}
PROBES = [None, "", "3", "0", "-1", "2.5", "1e30", "nan", "abc", "a,b,c", "runs/x"]


def outcome(parser, flag: str, value):
    """What a parser makes of `flag value` (or the flag alone): the parsed value, or 'refused'."""
    argv = [flag] if value is None else [flag, value]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return "refused"
    action = next(a for a in parser._actions if flag in a.option_strings)
    return getattr(args, action.dest, "absent")


def subparsers():
    from minidiff.cli import build_parser

    top = build_parser()
    (sub,) = [a for a in top._actions if a.dest == "command"]
    return sub.choices


@pytest.mark.parametrize("commands", list(TOGETHER), ids="-and-".join)
def test_commands_that_go_together_take_the_same_flags(commands, capsys):
    parsers = subparsers()
    first, second = (parsers[name] for name in commands)
    for flag in TOGETHER[commands]:
        for parser, name in ((first, commands[0]), (second, commands[1])):
            assert flag in parser._option_string_actions, f"`{name}` has no {flag}"
        for value in PROBES:
            if value is None and first._option_string_actions[flag].nargs != 0 and \
                    first._option_string_actions[flag].nargs != "?":
                continue
            a, b = outcome(first, flag, value), outcome(second, flag, value)
            assert a == b, (f"{flag} {value!r}: `{commands[0]}` gives {a!r}, `{commands[1]}` "
                            f"{b!r}")
    capsys.readouterr()  # argparse's refusals, printed to stderr
