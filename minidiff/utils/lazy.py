"""Names a package exports but loads on first use, so importing the package loads no torch.

    # in a package's __init__.py
    _EXPORTS = {"load": "minidiff.pipeline"}  # name -> the module that owns it
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

Python calls a module's `__getattr__` only for a name it does not already hold (PEP 562), so
`minidiff.load` imports `minidiff.pipeline` (and torch) the first time it is read, and never for
`import minidiff.training.config`. Imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """(`__getattr__`, `__dir__`) for `package`: each name of `exports` read from its module."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
