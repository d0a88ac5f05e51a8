"""minidiff: diffusion models from scratch, the way the "How Diffusion Models Work" course
teaches them, with a NumPy specification (`minidiff.reference`), readable torch code (this
package) and fused Triton kernels (`minidiff.kernels`).

Papers: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021 (cosine
schedule), Ho & Salimans 2022 (classifier-free guidance).
"""

from .noising import q_sample
from .pipeline import load
from .samplers import ddim_step, ddim_timesteps, ddpm_step
from .schedules import Schedule, make_schedule

__version__ = "0.1.0"

__all__ = [
    "Schedule",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_step",
    "load",
    "make_schedule",
    "q_sample",
]
