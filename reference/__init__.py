"""minidiff.reference: the NumPy specification of the diffusion math (float64, NumPy only).

Everything else in minidiff (the torch functions, the Triton kernels, the tutorials) is tested
against these functions. Read them first: each docstring names the equation it implements.
"""

from .noising import q_sample
from .samplers import ddim_step, ddim_timesteps, ddpm_coefficients, ddpm_step
from .schedules import Schedule, make_schedule

__all__ = [
    "Schedule",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_coefficients",
    "ddpm_step",
    "make_schedule",
    "q_sample",
]
