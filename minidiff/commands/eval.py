"""`python -m minidiff eval`: not built yet."""

from ..errors import MinidiffError


def add_arguments(parser):
    pass


def main(args) -> int:
    raise MinidiffError("'minidiff eval' is not built yet")
