"""`python -m minidiff train`: not built yet."""

from ..errors import MinidiffError


def add_arguments(parser):
    pass


def main(args) -> int:
    raise MinidiffError("'minidiff train' is not built yet")
