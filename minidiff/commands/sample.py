"""`python -m minidiff sample`: not built yet."""

from ..errors import MinidiffError


def add_arguments(parser):
    pass


def main(args) -> int:
    raise MinidiffError("'minidiff sample' is not built yet")
