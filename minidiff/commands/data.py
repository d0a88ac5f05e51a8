"""`python -m minidiff data`: not built yet."""

from ..errors import MinidiffError


def add_arguments(parser):
    pass


def main(args) -> int:
    raise MinidiffError("'minidiff data' is not built yet")
