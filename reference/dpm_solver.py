"""DPM-Solver++(2M): a second-order solver of the reverse process, and its timesteps.

Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models" (arXiv 2211.01095), Algorithm 2 (multistep, data prediction). Notation: the glossary in
`minidiff.reference` (reference/__init__.py), and per timestep t (float64, shape (B, 1, ..., 1)):

| name       | symbol                      | meaning                                         |
|------------|-----------------------------|-------------------------------------------------|
| `alpha_t`  | alpha_t = sqrt(alpha_bar_t) | signal scale of x_t = alpha_t x0 + sigma_t eps  |
| `sigma_t`  | sigma_t = sqrt(1-alpha_bar) | noise scale; 0 at t = 0                         |
| `lambda_t` | lambda_t = log(alpha/sigma) | half the log-SNR; +inf at t = 0                 |
| `h`        | h = lambda_s - lambda_t     | the step's length in lambda (> 0: s < t)        |
| `x0_theta` | x_theta(x_t, t)             | the data prediction, `predict_x0`               |

Tutorial: tutorials/06_fast_sampling.py.
"""

from __future__ import annotations

import numpy as np

from .noising import Schedule, check_same_shape, check_t, extract, predict_x0
from .samplers import SPACINGS, check_z, ddim_timesteps

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
    x_t, eps_theta, t, x0_theta_prev = _check_inputs(x_t, eps_theta, t, schedule, x0_theta_prev,
                                                     t_prev)
    ratio, phi, c = (a.reshape((-1,) + (1,) * (x_t.ndim - 1))
                     for a in dpm_solver_coefficients(t, s, schedule, t_prev))
    return _update(x_t, eps_theta, t, schedule, ratio, phi, c, x0_theta_prev)


def _check_inputs(x_t, eps_theta, t, schedule: Schedule, x0_theta_prev, t_prev):
    """Both solvers' checks: shapes, history given whole, t; returns x_t, eps_theta, t and
    x0_theta_prev, as float64 arrays (t int64)."""
    x_t, eps_theta = np.asarray(x_t, np.float64), np.asarray(eps_theta, np.float64)
    if x0_theta_prev is not None:
        x0_theta_prev = np.asarray(x0_theta_prev, np.float64)
    check_same_shape(x_t=x_t, eps_theta=eps_theta, x0_theta_prev=x0_theta_prev)
    if (x0_theta_prev is None) != (t_prev is None):
        raise ValueError("give x0_theta_prev and t_prev together (second order) or neither")
    t = check_t(t, schedule.T)
    if t.shape != (x_t.shape[0],):
        raise ValueError(f"t must have shape ({x_t.shape[0]},) to match x_t, got {t.shape}")
    return x_t, eps_theta, t, x0_theta_prev


def _update(x_t, eps_theta, t, schedule: Schedule, ratio, phi, c, x0_theta_prev):
    """(ratio * x_t + phi * D, x0_theta): Algorithm 2, lines 5 and 6, for either solver."""
    x0_theta = predict_x0(x_t, eps_theta, extract(schedule.alpha_bar, t, x_t))
    d = x0_theta
    if x0_theta_prev is not None:
        d = x0_theta + c * (x0_theta - x0_theta_prev)  # line 5
    return ratio * x_t + phi * d, x0_theta  # line 6


def dpm_solver_sde_coefficients(t, s, schedule: Schedule, t_prev=None):
    """The four per-sample numbers of one SDE-DPM-Solver++(2M) update from t to s.

    x_s = ratio * x_t + phi * D + sigma * z, with
        ratio = sigma_s / sigma_t * e^{-h},  phi = alpha_s (1 - e^{-2h}),
        sigma = sigma_s sqrt(1 - e^{-2h}),   c = 1 / (2 r) as in `dpm_solver_coefficients`
    (Lu et al. 2022b, section 5 and Appendix: the exponential integrator of the reverse SDE in
    data prediction; D is Algorithm 2's line 5, the midpoint form). Why it is right: with D = x0
    and x_t = alpha_t x0 + sigma_t eps, sigma_s / sigma_t e^{-h} alpha_t = alpha_s e^{-2h}, so
    the mean is alpha_s x0 and the variance sigma_s^2 (e^{-2h} + 1 - e^{-2h}): x_s is on the
    forward marginal at s. At first order it is DDPM's posterior q(x_s | x_t, x0_theta), i.e.
    DDIM with eta = 1. s = 0: ratio = sigma = c = 0 and phi = 1, the step lands on x0_theta.
    """
    ratio, _, c = dpm_solver_coefficients(t, s, schedule, t_prev)
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    # e^{-h} = (sigma_s / alpha_s) / (sigma_t / alpha_t) = ratio * alpha_t / alpha_s
    e_minus_h = ratio * np.sqrt(alpha_bar_t / alpha_bar_s)
    one_minus_e_2h = 1.0 - e_minus_h**2  # 1 - e^{-2h}, in (0, 1]
    sigma = np.sqrt((1.0 - alpha_bar_s) * one_minus_e_2h)
    return ratio * e_minus_h, np.sqrt(alpha_bar_s) * one_minus_e_2h, c, sigma


def dpm_solver_sde_step(x_t, eps_theta, t, s, schedule: Schedule, z=None, x0_theta_prev=None,
                        t_prev=None):
    """One SDE-DPM-Solver++(2M) update from t to an earlier s; returns (x_s, x0_theta).

    The stochastic twin of `dpm_solver_step`: the same data prediction and Algorithm 2 line 5
    correction D, but the reverse SDE's update (coefficients: `dpm_solver_sde_coefficients`):
        x_s = sigma_s / sigma_t e^{-h} x_t + alpha_s (1 - e^{-2h}) D + sigma_s sqrt(1 - e^{-2h}) z
    Each update injects fresh noise z, like DDIM at eta = 1 (its first order), which corrects
    the errors earlier updates made; the second-order D keeps it sharp in few steps. z may be
    None only where sigma = 0 (s = 0 for every sample).
    """
    check_same_shape(x_t=x_t, z=z)
    x_t, eps_theta, t, x0_theta_prev = _check_inputs(x_t, eps_theta, t, schedule, x0_theta_prev,
                                                     t_prev)
    coefficients = dpm_solver_sde_coefficients(t, s, schedule, t_prev)
    check_z(z, coefficients[3], "dpm_solver_sde_step")
    ratio, phi, c, sigma = (a.reshape((-1,) + (1,) * (x_t.ndim - 1)) for a in coefficients)
    x_s, x0_theta = _update(x_t, eps_theta, t, schedule, ratio, phi, c, x0_theta_prev)
    return (x_s if z is None else x_s + sigma * np.asarray(z, np.float64)), x0_theta


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
