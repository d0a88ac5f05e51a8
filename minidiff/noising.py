"""The forward (noising) process in torch: `minidiff.reference.noising`, batched, on any device.

x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps (DDPM eq. 4). Not the course's
notebook form, which leaves the square root off the noise coefficient; see the reference.

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

import torch

from minidiff.schedules import Schedule, check_timesteps, compute_dtype, extract


def q_sample(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t from x0, a per-sample timestep t in [0, T] and noise eps (DDPM eq. 4)."""
    if eps.shape != x0.shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)}; they must match")
    t = check_timesteps(t, schedule.T, x0, low=0)
    dtype = compute_dtype(x0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    signal, noise = alpha_bar_t.sqrt().to(dtype), (1 - alpha_bar_t).sqrt().to(dtype)
    return signal * x0.to(dtype) + noise * eps.to(dtype)
