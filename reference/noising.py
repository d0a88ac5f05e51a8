"""The forward (noising) process q(x_t | x0), DDPM eq. (4).

Notation as in `schedules.py`; `x0` is a clean image, `eps` ~ N(0, I) the noise, `x_t` the noised
image at timestep t.

The course's notebooks noise with sqrt(alpha_bar_t) * x0 + (1 - alpha_bar_t) * eps, without the
square root on the noise coefficient. That is not eq. (4): its x_t has variance
alpha_bar_t + (1 - alpha_bar_t)^2 < 1, so the model trains on less noise than the sampler assumes.
minidiff implements eq. (4).

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

import numpy as np

from .schedules import Schedule, check_timesteps, per_sample


def q_sample(x0, t, eps, schedule: Schedule) -> np.ndarray:
    """x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps, DDPM eq. (4).

    x0 and eps have the same shape (B, ...); t is an integer array of shape (B,), one timestep per
    sample, each in [0, T] (t = 0 returns x0 itself).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    if eps.shape != x0.shape:
        raise ValueError(f"eps has shape {eps.shape} but x0 has shape {x0.shape}; they must match")
    t = check_timesteps(t, schedule.T, low=0)
    alpha_bar_t = per_sample(schedule.alpha_bar, t, x0)
    return np.sqrt(alpha_bar_t) * x0 + np.sqrt(1.0 - alpha_bar_t) * eps
