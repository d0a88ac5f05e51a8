"""Where the Triton kernels run: natively on a CUDA GPU, else in Triton's CPU interpreter.

The interpreter is chosen by TRITON_INTERPRET=1, which Triton reads when a `@triton.jit` function
is defined, including its own library functions (`tl.randn` and friends) defined when
`triton.language` is first imported. So this module must run before triton is imported; the
package `__init__` imports it first. If something imported triton earlier (torch.compile probes
for it), `_interpret_triton_language` re-wraps triton's library functions for the interpreter.
It prints nothing; the CLI says which backend it is using.
"""

from __future__ import annotations

import os
import sys

import torch

# An explicit TRITON_INTERPRET=0 or 1 is obeyed (`compile.py` sets 0 to compile for GPUs it lacks);
# unset, the interpreter is chosen exactly when there is no CUDA device.
_REQUESTED = os.environ.get("TRITON_INTERPRET", "")
INTERPRETED = _REQUESTED == "1" or (_REQUESTED == "" and not torch.cuda.is_available())
#: True when the kernels run natively on a CUDA device rather than in the interpreter.
ON_CUDA = not INTERPRETED and torch.cuda.is_available()


def backend() -> str:
    """One word for the CLI's status line: "cuda" or "interpreter"."""
    return "cuda" if ON_CUDA else "interpreter"


def _interpret_triton_language() -> None:
    """Make triton.language's own @jit functions interpretable after a too-early import."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    modules = [m for name, m in list(sys.modules.items()) if name.startswith("triton.language")]
    from triton.language import core

    wrapped = {}  # id(JITFunction) -> its InterpretedFunction, shared by every name for it
    for namespace in [*modules, core.tensor]:  # tensor methods such as x.sum() are @jit too
        for name, value in list(vars(namespace).items()):
            if isinstance(value, JITFunction):
                if id(value) not in wrapped:
                    wrapped[id(value)] = InterpretedFunction(value.fn)
                setattr(namespace, name, wrapped[id(value)])


if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton.language" in sys.modules:
        _interpret_triton_language()
