"""Settings and their rules: each config field declares its default, help and range once.

A config dataclass declares every field with `setting(...)`: the default, one line of help (the
comment nanoGPT would write beside it), and the rule the value must keep (a range, or a list of
choices). The field's annotation gives its kind (`int`, `float`, `str`, `bool`; `| None` allows
None). From that one declaration:

- `check_settings(config)`, called from the dataclass's `__post_init__`, refuses a bad value given
  from Python in one line naming the field: `steps=0 is too small: it must be >= 1`;
- `minidiff.cli.flags.add_settings` makes the command-line flag `--field-name`, whose argparse
  type applies the same rule and refuses a bad word in one line naming the flag:
  `argument --steps: 0 is too small: it must be >= 1` (exit 2), and whose help shows the default.

    @dataclass
    class SamplerConfig:
        sampler: str = setting("ddim", "how to walk from noise to images", choices=SAMPLERS)
        steps: int = setting(25, "DDIM jumps", low=1, high=10_000)
        eta: float = setting(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like", low=0, high=1)

        def __post_init__(self):
            check_settings(self)  # then any rule that ties two fields together

Bounds: `low`/`high` are inclusive, `above`/`below` exclusive. Imports nothing but the standard
library, so a config module that uses it stays free of torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minidiff.utils.errors import MinidiffError

KINDS = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Rule:
    """What a value of one setting must be."""

    kind: type  # int, float, str or bool
    optional: bool = False  # None allowed
    low: float | None = None  # value >= low
    high: float | None = None  # value <= high
    above: float | None = None  # value > above
    below: float | None = None  # value < below
    choices: tuple | None = None  # value in choices
    why: str = ""  # said after a range refusal, e.g. "this machine has 2 cores"

    def reason(self, value) -> str | None:
        """Why `value` breaks the rule, as the words that follow it; None when it keeps it."""
        if value is None:
            return None if self.optional else "is not allowed: give a value"
        if self.choices is not None:
            return None if value in self.choices else f"is not one of {', '.join(self.choices)}"
        if self.kind is bool:
            return None if isinstance(value, bool) else "is not True or False"
        if self.kind is str:
            return None if isinstance(value, str) else "is not text"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a whole number" if self.kind is int else "is not a number"
        if self.kind is int and not isinstance(value, int):
            return "is not a whole number"
        if not math.isfinite(value):
            bounds = self._bounds()
            return "is not a finite number" + (f": it must be {bounds}" if bounds else "")
        if (self.low is not None and value < self.low
                or self.above is not None and value <= self.above):
            return self._out_of_range("small")
        if (self.high is not None and value > self.high
                or self.below is not None and value >= self.below):
            return self._out_of_range("large")
        return None

    def parse(self, text: str):
        """`text`, a word from the command line, as a value that keeps the rule; else a one-line
        MinidiffError that starts with the word."""
        if self.kind is int:
            value = _whole_number(text)
            if value is None:
                raise MinidiffError(f"{text!r} is not a whole number")
        elif self.kind is float:
            try:
                value = float(text)
            except ValueError:
                raise MinidiffError(f"{text!r} is not a number") from None
        else:
            value = text
        reason = self.reason(value)
        if reason is not None:
            raise MinidiffError(f"{text!r} {reason}" if self.kind is str else f"{text} {reason}")
        return value

    def describe(self) -> str:
        """The rule in words, for help texts and messages: "an integer >= 1"."""
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}"
        noun = {int: "an integer", float: "a number", bool: "on or off", str: "text"}[self.kind]
        bounds = self._bounds()
        return f"{noun} {bounds}" if bounds else noun

    def _out_of_range(self, side: str) -> str:
        if side == "small":
            bound = f">= {_show(self.low)}" if self.low is not None else f"> {_show(self.above)}"
        else:
            bound = f"<= {_show(self.high)}" if self.high is not None else f"< {_show(self.below)}"
        words = f"is too {side}: it must be {bound}"
        return f"{words} ({self.why})" if self.why else words

    def _interval(self) -> str:
        left = f"[{_show(self.low)}" if self.low is not None else f"({_show(self.above)}"
        right = f"{_show(self.high)}]" if self.high is not None else f"{_show(self.below)})"
        return f"{left}, {right}"

    def _bounds(self) -> str:
        """"in [0, 1)", ">= 1", "<= 128", or "" when unbounded."""
        lower = (self.low, ">=") if self.low is not None else (self.above, ">")
        upper = (self.high, "<=") if self.high is not None else (self.below, "<")
        if lower[0] is not None and upper[0] is not None:
            return f"in {self._interval()}"
        value, sign = lower if lower[0] is not None else upper
        return f"{sign} {_show(value)}" if value is not None else ""


def setting(default, help: str, *, low=None, high=None, above=None, below=None, choices=None,
            why: str = "", flag: str | None = None, metavar: str | None = None):
    """A dataclass field with its help and rule (see the module docstring). `flag` renames the
    command-line flag (default `--field-name`); `metavar` names its value in the help."""
    rule = {"low": low, "high": high, "above": above, "below": below,
            "choices": None if choices is None else tuple(choices), "why": why}
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule,
                                                        "flag": flag, "metavar": metavar})


def rule_of(field: dataclasses.Field) -> Rule | None:
    """The Rule a `setting` field declares (its kind from the annotation); None for plain fields."""
    if "rule" not in field.metadata:
        return None
    annotation = field.type.__name__ if isinstance(field.type, type) else str(field.type)
    names = [part.strip() for part in annotation.split("|")]
    kinds = [KINDS[name] for name in names if name in KINDS]
    if len(kinds) != 1:
        raise TypeError(f"setting {field.name}: annotate it int, float, str or bool (| None)")
    return Rule(kinds[0], optional="None" in names, **field.metadata["rule"])


def rules(cls) -> dict[str, Rule]:
    """Every setting of the dataclass `cls` (or of an instance) and its rule."""
    return {f.name: rule for f in dataclasses.fields(cls) if (rule := rule_of(f)) is not None}


def check_settings(config) -> None:
    """Raise a one-line MinidiffError for the first field of `config` that breaks its rule."""
    for name, rule in rules(config).items():
        value = getattr(config, name)
        reason = rule.reason(value)
        if reason is not None:
            raise MinidiffError(f"{name}={_show(value)} {reason}")


def _whole_number(text: str) -> int | None:
    """int("12"), and the whole numbers floats write ("1e3", "2.0"); None for anything else."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return repr(value) if isinstance(value, str) else str(value)
