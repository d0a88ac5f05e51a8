"""Subcommands of `python -m minidiff`, one module each."""
