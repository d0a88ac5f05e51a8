"""One reverse step of DDPM and of DDIM, and DDIM's timestep sequences.

Notation as in `schedules.py`, plus: `eps` is the model's noise prediction eps_theta(x_t, t),
`z` ~ N(0, I) fresh noise, `sigma` the standard deviation of the noise a step adds, and `s` the
earlier timestep a DDIM step jumps to. `t` and `s` are integer arrays of shape (B,): every sample in
a batch may sit at its own timestep.
"""

from __future__ import annotations

import numpy as np

from .schedules import Schedule, check_timesteps, per_sample

VARIANCES = ("beta", "beta_tilde", "none")
SPACINGS = ("course", "uniform")


def ddpm_coefficients(t, schedule: Schedule, variance: str = "beta"):
    """The three per-timestep numbers of a DDPM step, as arrays of shape t.shape.

    s1 = 1 / sqrt(alpha_t), s2 = beta_t / sqrt(1 - alpha_bar_t), s3 = sigma_t, with
    sigma_t^2 = beta_t ("beta", the course and DDPM section 3.2), beta~_t ("beta_tilde") or
    0 ("none", the course's demonstration of what leaving out the fresh noise does).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance={variance!r} is not one of {', '.join(VARIANCES)}")
    t = check_timesteps(t, schedule.T)
    s1 = 1.0 / np.sqrt(schedule.alpha[t])
    s2 = schedule.beta[t] / np.sqrt(1.0 - schedule.alpha_bar[t])
    sigma2 = {"beta": schedule.beta, "beta_tilde": schedule.beta_tilde}.get(variance)
    s3 = np.zeros(t.shape) if sigma2 is None else np.sqrt(sigma2[t])
    s3 = np.where(t == 1, 0.0, s3)  # Algorithm 2, line 3: no fresh noise on the last step
    return s1, s2, s3


def ddpm_step(x_t, eps, t, schedule: Schedule, z, variance: str = "beta") -> np.ndarray:
    """x_{t-1} = s1 * (x_t - s2 * eps) + s3 * z: DDPM Algorithm 2, line 4 (eq. 11 plus noise).

    The course's `denoise_add_noise`. Coefficients from `ddpm_coefficients`; z is read even where
    s3 = 0 so that every call has the same shape contract (pass zeros to mean "no noise").
    """
    x_t, eps, z = (np.asarray(a, dtype=np.float64) for a in (x_t, eps, z))
    _check_same_shape(x_t=x_t, eps=eps, z=z)
    t = check_timesteps(t, schedule.T)
    if t.shape != (x_t.shape[0],):
        raise ValueError(f"t must have shape ({x_t.shape[0]},) to match x_t, got {t.shape}")
    s1, s2, s3 = (c.reshape((-1,) + (1,) * (x_t.ndim - 1)) for c in ddpm_coefficients(t, schedule, variance))
    return s1 * (x_t - s2 * eps) + s3 * z


def ddim_step(x_t, eps, t, s, schedule: Schedule, eta=0.0, z=None, clip_x0=False) -> np.ndarray:
    """Jump from timestep t to an earlier s (DDIM, Song et al. 2021, eq. 12 with sigma of eq. 16).

    x0_pred = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)          "predicted x0"
    sigma   = eta * sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_s)
    x_s     = sqrt(alpha_bar_s) * x0_pred + sqrt(1 - alpha_bar_s - sigma^2) * eps + sigma * z

    eta = 0 is deterministic and is the course's `denoise_ddim`; eta = 1 between consecutive steps
    is DDPM with sigma^2 = beta~_t. s may be 0 (alpha_bar_0 = 1: the step lands on x0_pred).
    `clip_x0` clamps x0_pred to [-1, 1], the data range, before re-noising.
    """
    x_t, eps = np.asarray(x_t, dtype=np.float64), np.asarray(eps, dtype=np.float64)
    _check_same_shape(x_t=x_t, eps=eps)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} is outside the valid range [0, 1]")
    t = check_timesteps(t, schedule.T)
    s = check_timesteps(s, schedule.T, name="s", low=0)
    if np.any(s >= t):
        raise ValueError(f"s={s[s >= t].flat[0]} must be earlier than t (s < t) for every sample")
    if eta > 0 and z is None:
        raise ValueError("ddim_step with eta > 0 needs fresh noise z of x_t's shape")
    z = np.zeros_like(x_t) if z is None else np.asarray(z, dtype=np.float64)
    _check_same_shape(x_t=x_t, z=z)
    alpha_bar_t = per_sample(schedule.alpha_bar, t, x_t)
    alpha_bar_s = per_sample(schedule.alpha_bar, s, x_t)
    x0_pred = (x_t - np.sqrt(1.0 - alpha_bar_t) * eps) / np.sqrt(alpha_bar_t)  # eq. (12)
    if clip_x0:
        x0_pred = np.clip(x0_pred, -1.0, 1.0)
    sigma = eta * np.sqrt((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s))
    direction = np.sqrt(np.maximum(1.0 - alpha_bar_s - sigma**2, 0.0))  # eq. (12) "direction to x_t"
    return np.sqrt(alpha_bar_s) * x0_pred + direction * eps + sigma * z


def ddim_timesteps(T: int, n: int, spacing: str = "course") -> np.ndarray:
    """The timesteps a DDIM sampler visits, from T down, followed by 0 (the clean image).

    Each consecutive pair (t, s) is one `ddim_step`.
    - "course": the course's `range(T, 0, -(T // n))`; it takes n steps when n divides T (more
      otherwise: T=500, n=7 visits 8), and its last step jumps to 0 from T // n or below.
    - "uniform": n timesteps evenly spaced from T to 1, so the last step is the usual 1 -> 0.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r} is not one of {', '.join(SPACINGS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
        raise ValueError(f"n={n!r} steps is outside the valid range [1, {T}]")
    if spacing == "course":
        visited = np.arange(T, 0, -(T // n))
    else:
        visited = np.round(np.linspace(T, 1, n)).astype(np.int64)
    return np.concatenate([visited, [0]]).astype(np.int64)


def _check_same_shape(**arrays) -> None:
    (first_name, first), *rest = arrays.items()
    for name, a in rest:
        if a.shape != first.shape:
            raise ValueError(f"{name} has shape {a.shape} but {first_name} has {first.shape}")
