"""One reverse step of DDPM and of DDIM, and DDIM's timestep sequences.

Notation: the glossary in `minidiff.reference` (reference/__init__.py). Here `eps_theta` is the
model's noise prediction eps_theta(x_t, t), `x0_theta` its predicted x0, `z` ~ N(0, I) fresh
noise (None: no noise, under `check_z`'s rule), `sigma` the standard deviation of the noise a
step adds, and `s` the earlier timestep a DDIM step jumps to. `t` and `s` are ints or integer
arrays of shape (B,): every sample in a batch may sit at its own timestep.
"""

from __future__ import annotations

import numpy as np

from .schedules import Schedule, check_same_shape, check_t, extract

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


def predict_x0(x_t, eps_theta, alpha_bar_t) -> np.ndarray:
    """x0_theta = (x_t - sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_bar_t): DDIM eq. (12)'s
    "predicted x0", DPM-Solver++'s data prediction x_theta. `alpha_bar_t` broadcasts against x_t."""
    return (x_t - np.sqrt(1.0 - alpha_bar_t) * eps_theta) / np.sqrt(alpha_bar_t)


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


# DPM-Solver++(2M) ---------------------------------------------------------------------------
# Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
# Models" (arXiv 2211.01095). Extra notation, per timestep t (float64, shape (B, 1, ..., 1)):
#
# | name       | symbol                      | meaning                                         |
# |------------|-----------------------------|-------------------------------------------------|
# | `alpha_t`  | alpha_t = sqrt(alpha_bar_t) | signal scale of x_t = alpha_t x0 + sigma_t eps  |
# | `sigma_t`  | sigma_t = sqrt(1-alpha_bar) | noise scale; 0 at t = 0                         |
# | `lambda_t` | lambda_t = log(alpha/sigma) | half the log-SNR; +inf at t = 0                 |
# | `h`        | h = lambda_s - lambda_t     | the step's length in lambda (> 0: s < t)        |
# | `x0_theta` | x_theta(x_t, t)             | the data prediction, `predict_x0`               |

DPM_SPACINGS = ("trailing", *SPACINGS)


def log_snr(alpha_bar) -> np.ndarray:
    """lambda = log(alpha / sigma) = log(alpha_bar / (1 - alpha_bar)) / 2; +inf at alpha_bar = 1."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 0.5 * (np.log(alpha_bar) - np.log1p(-alpha_bar))


def dpm_solver_coefficients(t, s, schedule: Schedule, t_prev=None):
    """The three per-sample numbers of one DPM-Solver++ update from t to s, shape t.shape.

    ratio = sigma_s / sigma_t and phi = alpha_s * (1 - e^{-h}) multiply x_t and D in
    x_s = ratio * x_t + phi * D (Algorithm 2's update, with -(e^{-h} - 1) written as 1 - e^{-h});
    c = 1 / (2 r) with r = h_prev / h (Algorithm 2's r_i), h_prev = lambda_t - lambda_{t_prev},
    weighs the multistep correction D = x0_theta + c * (x0_theta - x0_theta_prev). c = 0 for a
    first-order step (no t_prev) and for a step to s = 0, whose h is infinite: the last step
    lands on x0_theta (a deliberate departure: Algorithm 2 would divide by r = 0 there).
    """
    t = check_t(t, schedule.T)
    s = check_t(s, schedule.T, name="s", low=0)
    if t.shape != s.shape or np.any(s >= t):
        raise ValueError("s must have t's shape and be earlier than t (s < t) for every sample")
    lambda_t, lambda_s = log_snr(schedule.alpha_bar[t]), log_snr(schedule.alpha_bar[s])
    h = lambda_s - lambda_t
    ratio = np.sqrt((1.0 - schedule.alpha_bar[s]) / (1.0 - schedule.alpha_bar[t]))
    phi = -np.sqrt(schedule.alpha_bar[s]) * np.expm1(-h)
    if t_prev is None:
        return ratio, phi, np.zeros(t.shape)
    t_prev = check_t(t_prev, schedule.T, name="t_prev")
    if t_prev.shape != t.shape or np.any(t_prev <= t):
        raise ValueError("t_prev must have t's shape and be later than t (t_prev > t)")
    h_prev = lambda_t - log_snr(schedule.alpha_bar[t_prev])
    with np.errstate(invalid="ignore"):
        c = np.where(s == 0, 0.0, h / (2.0 * h_prev))  # Algorithm 2: 1 / (2 r_i)
    return ratio, phi, c


def dpm_solver_step(x_t, eps_theta, t, s, schedule: Schedule, x0_theta_prev=None, t_prev=None):
    """One DPM-Solver++(2M) update from t to an earlier s; returns (x_s, x0_theta).

    Lu et al. 2022b, Algorithm 2 (multistep second order, data prediction), in lambda:
        x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)                  data prediction
        D        = x0_theta + (x0_theta - x0_theta_prev) / (2 r),  r = h_prev / h     line 5
        x_s      = sigma_s / sigma_t * x_t - alpha_s * (e^{-h} - 1) * D              line 6
    Without `x0_theta_prev` (the first update, or order 1) D = x0_theta: DPM-Solver++1, which
    is DDIM with eta = 0. `t_prev` is the timestep x0_theta_prev was predicted at (the update
    before this one). Keep the returned x0_theta for the next call. Coefficients:
    `dpm_solver_coefficients`.
    """
    x_t, eps_theta = np.asarray(x_t, np.float64), np.asarray(eps_theta, np.float64)
    check_same_shape(x_t=x_t, eps_theta=eps_theta)
    if (x0_theta_prev is None) != (t_prev is None):
        raise ValueError("give x0_theta_prev and t_prev together (second order) or neither")
    t = check_t(t, schedule.T)
    if t.shape != (x_t.shape[0],):
        raise ValueError(f"t must have shape ({x_t.shape[0]},) to match x_t, got {t.shape}")
    ratio, phi, c = (a.reshape((-1,) + (1,) * (x_t.ndim - 1))
                     for a in dpm_solver_coefficients(t, s, schedule, t_prev))
    x0_theta = predict_x0(x_t, eps_theta, extract(schedule.alpha_bar, t, x_t))
    d = x0_theta
    if x0_theta_prev is not None:
        x0_theta_prev = np.asarray(x0_theta_prev, np.float64)
        check_same_shape(x_t=x_t, x0_theta_prev=x0_theta_prev)
        d = x0_theta + c * (x0_theta - x0_theta_prev)  # Algorithm 2, line 5
    return ratio * x_t + phi * d, x0_theta  # Algorithm 2, line 6


def dpm_solver_timesteps(T: int, n: int, spacing: str = "trailing") -> np.ndarray:
    """The n + 1 timesteps DPM-Solver++ visits, from T down to 0: n >= 1 updates.

    - "trailing": n + 1 timesteps evenly spaced from T to 0 (rounded), so every update spans
      about T / n and the last one goes from T / n straight to sigma = 0, leaving no noise.
    - "course" and "uniform": `ddim_timesteps`'s; "uniform" ends with the update 1 -> 0, which
      costs a network call for almost no change (DPM-Solver's known spacing pitfall).
    Every spacing ends with 0: the last update lands on x0_theta.
    """
    if spacing not in DPM_SPACINGS:
        raise ValueError(f"spacing={spacing!r} is not one of {', '.join(DPM_SPACINGS)}")
    if spacing in SPACINGS:
        return ddim_timesteps(T, n, spacing)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= T:
        raise ValueError(f"n={n!r} steps is outside the valid range [1, {T}]")
    return np.round(np.linspace(T, 0, n + 1)).astype(np.int64)
