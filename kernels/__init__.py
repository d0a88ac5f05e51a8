"""minidiff.kernels: hand-written Triton kernels, each proven equal to minidiff.reference.

    from minidiff import kernels
    x = kernels.ddpm_step(x_t, eps_theta, t, schedule, seed=seed, k=k)

On a CUDA GPU the kernels run natively; with none, in Triton's interpreter on CPU tensors, slowly
but with the same results. Importing this package sets no environment variable and imports no
Triton: the backend is chosen on the first use of a kernel (`runtime.choose_backend()`), or
earlier by an explicit `kernels.load()` (which also imports every kernel module, so that
`from minidiff.kernels import ddpm_step` works).
"""

import importlib
import sys

from minidiff.kernels import runtime

# Each public wrapper and the module that defines it (its `@triton.jit` kernel is private there).
WRAPPERS = {
    "ddim_step": "minidiff.kernels.samplers",
    "ddpm_step": "minidiff.kernels.samplers",
    "dpm_solver_sde_step": "minidiff.kernels.dpm_solver",
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
    """A wrapper, imported on first use, the backend chosen first (before Triton loads)."""
    if name not in WRAPPERS:
        raise AttributeError(f"module 'minidiff.kernels' has no attribute {name!r}")
    runtime.choose_backend()
    wrapper = getattr(importlib.import_module(WRAPPERS[name]), name)
    globals()[name] = wrapper
    return wrapper
