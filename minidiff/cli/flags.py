"""The pieces every command's flags share: flags made from config fields, argparse types whose
refusals are one line naming the flag, and the help formatter that shows every default.

A config dataclass owns its rules (`minidiff.utils.rules.setting`); a command only maps flags
onto it:

    from minidiff.cli import flags

    def add_arguments(parser):
        # one flag per field: --sampler, --steps, --eta, typed, checked, helped, defaults shown
        flags.add_settings(parser, SamplerConfig, ["sampler", "steps", "eta"])
        # a flag that is no field: the same kind of type, the same one-line refusals
        parser.add_argument("--n", type=flags.integer(low=1, high=100_000), default=32,
                            help="how many sprites")
        parser.add_argument("--run", help="run folder (default: the newest under runs/)")

    def main(args):
        config = SamplerConfig(**flags.settings_from(args, SamplerConfig))

- `add_settings(parser, cls, names=None, *, only_given=False)`: one flag `--field-name` per
  setting of `cls` (all of them, or `names`), with the field's help, its rule as the argparse type
  (`minidiff sample: error: argument --steps: 0 is too small: it must be >= 1`, exit 2), choices
  shown as {a,b}, bool fields as --x/--no-x. `only_given=True` keeps flags the user did not type
  out of `args` (train applies them over a preset), while help still shows the field's default.
- `integer(low=, high=, ...)`, `number(...)`, `choice(options)`: argparse types for flags that are
  not fields, with the same bounds and messages as `minidiff.utils.rules.Rule`.
- `DefaultsFormatter`: the help formatter of every command (`minidiff.cli.build_parser` sets it):
  each flag's help ends with "(default: X)", numbers written 1,500. A help text that already
  says "default" is left as it is: write "(default: the newest run)" where the default is None.
- `OneLineParser`: argparse whose errors are one line, not the usage.
"""

from __future__ import annotations

import argparse
import dataclasses

from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import Rule, rule_of

__all__ = ["DefaultsFormatter", "OneLineParser", "add_settings", "choice", "integer", "number",
           "rule_type", "settings_from", "show_default"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line naming it and pointing at --help, not the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to every flag's help; `add_settings` flags show their field's
    default even when argparse's own default is SUPPRESS."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = getattr(action, "shown_default", action.default)
        if (text is argparse.SUPPRESS or not action.option_strings or "default" in text.lower()
                or default is None or default is argparse.SUPPRESS):
            return text
        shown = show_default(default).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def show_default(value) -> str:
    """A default as help shows it: 1,500, 0.004, on/off, text as it is."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def rule_type(rule: Rule):
    """An argparse type applying `rule`: argparse names the flag, `Rule.parse` the problem."""

    def parse(text: str):
        try:
            return rule.parse(text)
        except MinidiffError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = rule.describe()  # argparse's fallback message, should a ValueError escape
    return parse


def integer(*, low=None, high=None, above=None, below=None, why: str = ""):
    """An argparse type for a whole number in bounds (inclusive low/high, exclusive above/below)."""
    return rule_type(Rule(int, low=low, high=high, above=above, below=below, why=why))


def number(*, low=None, high=None, above=None, below=None, why: str = ""):
    """An argparse type for a finite number in bounds."""
    return rule_type(Rule(float, low=low, high=high, above=above, below=below, why=why))


def choice(options):
    """An argparse type for one of `options` (pass `metavar="{a,b}"` to show them in the usage)."""
    return rule_type(Rule(str, choices=tuple(options)))


def add_settings(parser, cls, names=None, *, only_given: bool = False) -> None:
    """Add a flag per setting of dataclass `cls` (see the module docstring)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names if names is not None else fields:
        field = fields[name]
        rule = rule_of(field)
        if rule is None:
            raise TypeError(f"{cls.__name__}.{name} is not declared with setting(...)")
        flag = field.metadata.get("flag") or "--" + name.replace("_", "-")
        options = {"dest": name, "help": field.metadata.get("help", "")}
        options["default"] = argparse.SUPPRESS if only_given else field.default
        if rule.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = rule_type(rule)
            if rule.choices is not None:
                options["metavar"] = "{" + ",".join(rule.choices) + "}"
            elif rule.kind in (int, float):
                options["metavar"] = "N" if rule.kind is int else "X"
        if field.metadata.get("metavar"):
            options["metavar"] = field.metadata["metavar"]
        action = parser.add_argument(flag, **options)
        action.help = options["help"]  # BooleanOptionalAction appends its own "(default: False)"
        action.shown_default = field.default


def settings_from(args: argparse.Namespace, cls) -> dict:
    """The values `args` holds for fields of `cls` (with only_given, just the flags typed)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
