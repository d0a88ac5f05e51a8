"""minidiff.kernels: hand-written Triton kernels, each proven equal to minidiff.reference.

Importing this package chooses the backend first (see `runtime`): with no CUDA device the kernels
run in Triton's interpreter on CPU tensors, slowly but with the same results.
"""

from minidiff.kernels import runtime
from minidiff.kernels.noising import q_sample
from minidiff.kernels.samplers import ddim_step, ddpm_step

__all__ = ["ddim_step", "ddpm_step", "q_sample", "runtime"]
