"""minidiff.kernels: hand-written Triton kernels, each proven equal to minidiff.reference.

Choose where they run, then use them:

    from minidiff import kernels
    kernels.load()  # runtime.choose_backend(), then the kernel modules
    x = kernels.ddpm_step(x_t, eps_theta, t, schedule, seed=seed, k=k)

With no CUDA device the kernels run in Triton's interpreter on CPU tensors, slowly but with the
same results. Importing this package sets no environment variable and imports no Triton: the
choice is the explicit call `runtime.choose_backend()`, which `load` makes. After it, the
wrappers below are also importable by name (`from minidiff.kernels import ddpm_step`).
"""

import importlib
import sys

from minidiff.kernels import runtime

# Each public wrapper and the module that defines it (its `@triton.jit` kernel is private there).
WRAPPERS = {
    "ddim_step": "minidiff.kernels.samplers",
    "ddpm_step": "minidiff.kernels.samplers",
    "dpm_solver_step": "minidiff.kernels.dpm_solver",
    "q_sample": "minidiff.kernels.noising",
}

__all__ = [*WRAPPERS, "runtime"]


def load():
    """Choose the backend (`runtime.choose_backend`), import the kernels, return this package."""
    runtime.choose_backend()
    for name in WRAPPERS:
        __getattr__(name)
    return sys.modules[__name__]


def __getattr__(name: str):
    """A wrapper, imported on first use once the backend is chosen."""
    if name not in WRAPPERS:
        raise AttributeError(f"module 'minidiff.kernels' has no attribute {name!r}")
    runtime.backend()  # raises, naming `load()`, when no backend is chosen yet
    wrapper = getattr(importlib.import_module(WRAPPERS[name]), name)
    globals()[name] = wrapper
    return wrapper
