"""Where the Triton kernels run: natively on a CUDA GPU, else in Triton's CPU interpreter.

The choice is one call, `choose_backend()`, made before the kernels are used: the first use of a
kernel through `minidiff.kernels` makes it, as do `minidiff.kernels.load()`, the tests'
conftest.py and chapter 7. Importing this module (or `minidiff.kernels`) sets no environment
variable and imports no Triton.

The interpreter is chosen by TRITON_INTERPRET=1, which Triton reads when a `@triton.jit` function
is defined, including its own library functions (`tl.randn` and friends) defined when
`triton.language` is first imported. So `choose_backend` is best called before anything imports
triton; if something did (torch.compile probes for it, or a kernel module was imported first),
it re-wraps the `@triton.jit` functions already defined, Triton's and minidiff's, for the
interpreter. It prints nothing; the CLI says which backend it is using.
"""

from __future__ import annotations

import os
import sys

import torch

_chosen: str | None = None  # "cuda" or "interpreter", once `choose_backend` has run


def choose_backend() -> str:
    """Choose where the kernels run, once, and return it: "cuda" or "interpreter".

    An explicit TRITON_INTERPRET=0 or 1 is obeyed (`compile.py` sets 0 to compile for GPUs it
    lacks); unset, the interpreter is chosen exactly when there is no CUDA device.
    """
    global _chosen
    if _chosen is None:
        requested = os.environ.get("TRITON_INTERPRET", "")
        interpreted = requested == "1" or (requested == "" and not torch.cuda.is_available())
        if interpreted:
            os.environ["TRITON_INTERPRET"] = "1"
            _interpret_loaded_jit_functions()
        _chosen = "interpreter" if interpreted or not torch.cuda.is_available() else "cuda"
    return _chosen


def backend() -> str:
    """The chosen backend, one word for the CLI's status line: "cuda" or "interpreter"."""
    if _chosen is None:
        raise RuntimeError("no kernel backend chosen yet: call minidiff.kernels.load() (or "
                           "minidiff.kernels.runtime.choose_backend()) first")
    return _chosen


def on_cuda() -> bool:
    """True when the kernels run natively on a CUDA device rather than in the interpreter."""
    return backend() == "cuda"


def _interpret_loaded_jit_functions() -> None:
    """Make the @jit functions defined before the choice interpretable: triton.language's own
    and those of minidiff's kernel modules."""
    prefixes = ("triton.language", "minidiff.kernels")
    modules = [m for name, m in list(sys.modules.items()) if name.startswith(prefixes) and m]
    if not modules:
        return
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    namespaces = list(modules)
    if "triton.language.core" in sys.modules:
        namespaces.append(sys.modules["triton.language.core"].tensor)  # x.sum() and co are @jit
    wrapped = {}  # id(JITFunction) -> its InterpretedFunction, shared by every name for it
    for namespace in namespaces:
        for name, value in list(vars(namespace).items()):
            if isinstance(value, JITFunction):
                if id(value) not in wrapped:
                    wrapped[id(value)] = InterpretedFunction(value.fn)
                setattr(namespace, name, wrapped[id(value)])
