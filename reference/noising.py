"""The forward (noising) process q(x_t | x0), DDPM eq. (4).

Notation: the glossary in `minidiff.reference` (reference/__init__.py); here `eps` is the TRUE
noise, the training target.

The course's notebooks noise with sqrt(alpha_bar_t) * x0 + (1 - alpha_bar_t) * eps, without the
square root on the noise coefficient. That is not eq. (4): its x_t has variance
alpha_bar_t + (1 - alpha_bar_t)^2 < 1, so the model trains on less noise than the sampler assumes.
minidiff implements eq. (4).

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

import numpy as np

from .schedules import Schedule, check_same_shape, check_t, extract


def q_sample(x0, t, eps, schedule: Schedule) -> np.ndarray:
    """x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps, DDPM eq. (4).

    x0 and eps have the same shape (B, ...); t is an int or an integer array of shape (B,), one
    timestep per sample, each in [0, T] (t = 0 returns x0 itself).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    return np.sqrt(alpha_bar_t) * x0 + np.sqrt(1.0 - alpha_bar_t) * eps
