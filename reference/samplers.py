"""One reverse step of DDPM and of DDIM, and DDIM's timestep sequences.

Notation: the glossary in `minidiff.reference` (reference/__init__.py). Here `eps_theta` is the
model's noise prediction eps_theta(x_t, t), `x0_theta` its predicted x0, `z` ~ N(0, I) fresh
noise (None: no noise, under `check_z`'s rule), `sigma` the standard deviation of the noise a
step adds, and `s` the earlier timestep a DDIM step jumps to. `t` and `s` are ints or integer
arrays of shape (B,): every sample in a batch may sit at its own timestep.
"""

from __future__ import annotations

import numpy as np

from .noising import Schedule, check_same_shape, check_t, extract, predict_x0

VARIANCES = ("beta", "beta_tilde", "none")
SPACINGS = ("course", "uniform")
ETA_RANGE = (0.0, 1.0)  # DDIM eq. (16)'s eta: 0 deterministic, 1 DDPM-like (the config's range too)


def check_variance(variance: str) -> None:
    """DDPM's choice of sigma_t^2 is one of VARIANCES; else ValueError naming them."""
    if variance not in VARIANCES:
        raise ValueError(f"variance={variance!r} is not one of {', '.join(VARIANCES)}")


def check_eta(eta) -> None:
    """DDIM's eta (eq. 16) lies in [0, 1]: 0 is deterministic, 1 DDPM-like; else ValueError."""
    low, high = ETA_RANGE
    if not low <= eta <= high:
        raise ValueError(f"eta={eta!r} is outside the valid range [{low:g}, {high:g}]")


def check_s_before_t(t, s) -> None:
    """Every sample's s is earlier than its t (s < t): a reverse step goes back; else ValueError."""
    t, s = np.asarray(t), np.asarray(s)
    if np.any(s >= t):
        raise ValueError(f"s={s[s >= t].flat[0]} must be earlier than t (s < t) for every sample")


def ddpm_coefficients(t, schedule: Schedule, variance: str = "beta"):
    """The three per-timestep numbers of a DDPM step, as arrays of shape t.shape.

    s1 = 1 / sqrt(alpha_t), s2 = beta_t / sqrt(1 - alpha_bar_t), s3 = sigma_t, with
    sigma_t^2 = beta_t ("beta", the course and DDPM section 3.2), beta~_t ("beta_tilde") or
    0 ("none", the course's demonstration of what leaving out the fresh noise does).
    """
    check_variance(variance)
    t = check_t(t, schedule.T)
    s1 = 1.0 / np.sqrt(schedule.alpha[t])
    s2 = schedule.beta[t] / np.sqrt(1.0 - schedule.alpha_bar[t])
    sigma2 = {"beta": schedule.beta, "beta_tilde": schedule.beta_tilde}.get(variance)
    s3 = np.zeros(t.shape) if sigma2 is None else np.sqrt(sigma2[t])
    s3 = np.where(t == 1, 0.0, s3)  # Algorithm 2, line 3: no fresh noise on the last step
    return s1, s2, s3


def check_z(z, sigma, caller: str) -> None:
    """The `z=None` contract of every layer: None means "add no fresh noise", which is allowed
    only where the step's sigma is 0 for every sample; else ValueError."""
    if z is None and np.any(np.asarray(sigma) > 0):
        raise ValueError(f"{caller} needs fresh noise z where sigma > 0 (z=None adds no noise, "
                         "allowed only where sigma = 0 for every sample)")


def ddpm_step(x_t, eps_theta, t, schedule: Schedule, z=None, variance="beta") -> np.ndarray:
    """x_{t-1} = s1 * (x_t - s2 * eps_theta) + s3 * z: DDPM Algorithm 2, line 4 (eq. 11 plus noise).

    The course's `denoise_add_noise`. Coefficients from `ddpm_coefficients`; z may be None where
    s3 = 0 for every sample (variance "none", or t = 1), per `check_z`.
    """
    x_t, eps_theta = np.asarray(x_t, dtype=np.float64), np.asarray(eps_theta, dtype=np.float64)
    z = None if z is None else np.asarray(z, dtype=np.float64)
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    t = check_t(t, schedule.T, x_t)
    shape = (-1,) + (1,) * (x_t.ndim - 1)  # per-sample numbers against (B, ...)
    s1, s2, s3 = (c.reshape(shape) for c in ddpm_coefficients(t, schedule, variance))
    check_z(z, s3, "ddpm_step")
    x_prev = s1 * (x_t - s2 * eps_theta)  # DDPM eq. (11)
    return x_prev if z is None else x_prev + s3 * z


def ddim_sigma(t, s, schedule: Schedule, eta=0.0) -> np.ndarray:
    """sigma of a DDIM step from t to s, shape t.shape: DDIM eq. (16) times eta.

    sigma = eta * sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_s),
    0 where s = 0 (alpha_bar_0 = 1) whatever eta.
    """
    t = check_t(t, schedule.T)
    s = check_t(s, schedule.T, name="s", low=0)
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    return eta * np.sqrt(
        (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s)
    )


def ddim_step(
    x_t, eps_theta, t, s, schedule: Schedule, eta=0.0, z=None, clip_x0=False
) -> np.ndarray:
    """Jump from timestep t to an earlier s (DDIM, Song et al. 2021, eq. 12 with sigma of eq. 16).

    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)                       "predicted x0"
    sigma    = ddim_sigma(t, s, schedule, eta)                                      eq. (16)
    x_s      = sqrt(alpha_bar_s) * x0_theta
               + sqrt(1 - alpha_bar_s - sigma^2) * eps_theta + sigma * z     "direction to x_t"

    eta = 0 is deterministic and is the course's `denoise_ddim`; eta = 1 between consecutive steps
    is DDPM with sigma^2 = beta~_t. s may be 0 (alpha_bar_0 = 1: the step lands on x0_theta).
    `clip_x0` clamps x0_theta to [-1, 1], the data range, before re-noising. z may be None where
    sigma = 0 for every sample (eta = 0, or s = 0), per `check_z`.
    """
    x_t, eps_theta = np.asarray(x_t, dtype=np.float64), np.asarray(eps_theta, dtype=np.float64)
    z = None if z is None else np.asarray(z, dtype=np.float64)
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    check_eta(eta)
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    check_s_before_t(t, s)
    sigma = ddim_sigma(t, s, schedule, eta).reshape((-1,) + (1,) * (x_t.ndim - 1))
    check_z(z, sigma, "ddim_step")
    alpha_bar_t = extract(schedule.alpha_bar, t, x_t)
    alpha_bar_s = extract(schedule.alpha_bar, s, x_t)
    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)  # eq. (12)
    if clip_x0:
        x0_theta = np.clip(x0_theta, -1.0, 1.0)
    direction = np.sqrt(np.maximum(1.0 - alpha_bar_s - sigma**2, 0.0))  # "direction to x_t"
    x_s = np.sqrt(alpha_bar_s) * x0_theta + direction * eps_theta
    return x_s if z is None else x_s + sigma * z


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
