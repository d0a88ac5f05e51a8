"""The command line: `python -m minidiff {train,sample,eval,data,lab} ...`.

Each subcommand lives in `minidiff/cli/<name>.py` and provides two functions:
`add_arguments(parser)` and `main(args) -> int`; their flags come from `minidiff.cli.flags` (flags
made from config fields, one-line argparse types, the help formatter every command uses, which
shows each default). This file only dispatches, and it is the one place
that turns bad input into one clear line and exit code 2 instead of a traceback. Set
MINIDIFF_DEBUG=1 to see the traceback behind such a line (a ValueError may be a bug, not a typo).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from minidiff.cli.flags import DefaultsFormatter, OneLineParser
from minidiff.utils.errors import MinidiffError

COMMANDS = {
    "train": "train a ContextUnet on sprites (built-in, .npy files or an image folder)",
    "train-autoencoder": "train the autoencoder whose latents `train --autoencoder` diffuses",
    "sample": "generate sprites from a trained run (DDPM, DDIM, class control, guidance)",
    "eval": "measure samples: FID, accuracy, diversity, texture, memorisation, speed",
    "data": "preview or export a dataset",
    "tutorials": "write the tutorial chapters as executed Jupyter notebooks",
    "lab": "serve a local web page to look inside a run: denoising step by step, noise, samplers",
}

# Errors that mean "the input was wrong", not "minidiff is broken": reported in one line.
USER_ERRORS = (MinidiffError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="minidiff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"minidiff.cli.{name.replace('-', '_')}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text,
                                    formatter_class=DefaultsFormatter)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with code 2 on unknown flags
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as error:
        if os.environ.get("MINIDIFF_DEBUG") == "1":
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"minidiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minidiff {args.command}: interrupted", file=sys.stderr)
        return 130
