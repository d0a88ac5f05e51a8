"""The forward (noising) process in torch: `minidiff.reference.noising`, batched, on any device.

x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps (DDPM eq. 4). Not the course's
notebook form, which leaves the square root off the noise coefficient; see the reference.
Notation: the glossary in `minidiff.reference` (reference/__init__.py); `eps` is the TRUE noise.

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

import torch

from minidiff.schedules import Schedule, check_same_shape, check_t, compute_dtype, extract


def q_sample(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t from x0, a per-sample timestep t in [0, T] and noise eps (DDPM eq. 4)."""
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    dtype = compute_dtype(x0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    signal, noise = alpha_bar_t.sqrt().to(dtype), (1 - alpha_bar_t).sqrt().to(dtype)
    return signal * x0.to(dtype) + noise * eps.to(dtype)
