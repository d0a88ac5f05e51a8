"""Reverse steps in torch: `minidiff.reference.samplers`, batched, any device.

Notation: the glossary in `minidiff.reference` (reference/__init__.py): `x_t`, `eps_theta` (the
model's noise prediction), `x0_theta` (its predicted x0), `z` fresh noise (None: no noise, under
`check_z`'s rule), `t` and `s` per-sample integer timesteps, `sigma` the added noise's standard
deviation. Arithmetic runs in float32 or wider (see `schedules.compute_dtype`) and results come
back in that dtype.

The loops that call these steps, and guidance, live in `minidiff/sampling.py`.

Tutorials: tutorials/02_sampling.py (DDPM), tutorials/06_fast_sampling.py (DDIM).
"""

from __future__ import annotations

import torch

from minidiff.reference import samplers as reference
from minidiff.reference.samplers import (
    SPACINGS,
    VARIANCES,
    check_eta,
    check_variance,
    ddim_timesteps,
    dpm_solver_timesteps,
)
from minidiff.schedules import Schedule, check_same_shape, check_t, compute_dtype, extract

__all__ = [
    "SPACINGS", "VARIANCES", "check_eta", "check_s_before_t", "check_variance", "check_z",
    "ddim_sigma", "ddim_step", "ddim_timesteps", "ddpm_coefficients", "ddpm_step", "predict_x0",
    "DPM_SPACINGS", "dpm_solver_coefficients", "dpm_solver_step", "dpm_solver_timesteps",
    "log_snr",
]


def ddpm_coefficients(t: torch.Tensor, schedule: Schedule, variance: str = "beta"):
    """s1 = 1/sqrt(alpha_t), s2 = beta_t/sqrt(1 - alpha_bar_t), s3 = sigma_t for each t (float64).

    sigma_t^2 = beta_t ("beta"), beta~_t ("beta_tilde") or 0 ("none"); s3 = 0 where t = 1.
    """
    check_variance(variance)
    s1 = schedule.alpha[t].rsqrt()
    s2 = schedule.beta[t] / (1 - schedule.alpha_bar[t]).sqrt()
    sigma2 = {"beta": schedule.beta, "beta_tilde": schedule.beta_tilde}.get(variance)
    s3 = torch.zeros_like(s1) if sigma2 is None else sigma2[t].sqrt()
    s3 = torch.where(t == 1, torch.zeros_like(s3), s3)  # Algorithm 2, line 3: no noise at the end
    return s1, s2, s3


def check_z(z, sigma: torch.Tensor, caller: str) -> None:
    """The reference's `check_z` rule: z=None (no fresh noise) only where sigma = 0 for every
    sample. sigma is read on the host only when z is None."""
    if z is None:
        reference.check_z(None, sigma.detach().cpu().numpy(), caller)


def check_s_before_t(t: torch.Tensor, s: torch.Tensor) -> None:
    """The reference's `check_s_before_t` on tensors (read on the host)."""
    reference.check_s_before_t(t.detach().cpu().numpy(), s.detach().cpu().numpy())


def ddpm_step(x_t, eps_theta, t, schedule: Schedule, z=None, variance="beta") -> torch.Tensor:
    """x_{t-1} = s1 * (x_t - s2 * eps_theta) + s3 * z (DDPM Algorithm 2, line 4; the course's
    `denoise_add_noise`). `z` may be None where s3 = 0 for every sample (`check_z`)."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    t = check_t(t, schedule.T, x_t)
    dtype = compute_dtype(x_t)
    s1, s2, s3 = (c.reshape((-1,) + (1,) * (x_t.ndim - 1))
                  for c in ddpm_coefficients(t, schedule, variance))
    check_z(z, s3, "ddpm_step")
    x_prev = s1.to(dtype) * (x_t.to(dtype) - s2.to(dtype) * eps_theta.to(dtype))  # DDPM eq. (11)
    return x_prev if z is None else x_prev + s3.to(dtype) * z.to(dtype)


def predict_x0(x_t, eps_theta, alpha_bar_t) -> torch.Tensor:
    """x0_theta = (x_t - sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_bar_t) (DDIM eq. 12).

    `alpha_bar_t` is a tensor that broadcasts against x_t (float64 from `extract`): the two
    coefficients are made in its precision and cast once to the compute dtype."""
    dtype = compute_dtype(x_t)
    sqrt_one_minus = (1 - alpha_bar_t).sqrt().to(dtype)
    return (x_t.to(dtype) - sqrt_one_minus * eps_theta.to(dtype)) / alpha_bar_t.sqrt().to(dtype)


def ddim_sigma(t, s, schedule: Schedule, eta=0.0) -> torch.Tensor:
    """sigma of a DDIM step from t to s for each sample (float64): DDIM eq. (16) times eta."""
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    return eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)).sqrt()


def ddim_step(
    x_t, eps_theta, t, s, schedule: Schedule, eta=0.0, z=None, clip_x0=False
) -> torch.Tensor:
    """Jump from t to an earlier s (DDIM eq. 12, sigma from eq. 16); see the reference's
    `ddim_step` for the three lines of math, which this mirrors term by term."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    check_eta(eta)
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    check_s_before_t(t, s)
    # float64: coefficients first, cast once
    sigma = ddim_sigma(t, s, schedule, eta).reshape((-1,) + (1,) * (x_t.ndim - 1))
    check_z(z, sigma, "ddim_step")
    dtype = compute_dtype(x_t)
    alpha_bar_t = extract(schedule.alpha_bar, t, x_t)
    alpha_bar_s = extract(schedule.alpha_bar, s, x_t)
    direction = (1 - alpha_bar_s - sigma**2).clamp_min(0).sqrt()  # eq. (12) "direction to x_t"
    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)  # eq. (12): the "predicted x0"
    if clip_x0:
        x0_theta = x0_theta.clamp(-1, 1)
    x_s = alpha_bar_s.sqrt().to(dtype) * x0_theta + direction.to(dtype) * eps_theta.to(dtype)
    return x_s if z is None else x_s + sigma.to(dtype) * z.to(dtype)


# DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): the reference's section of the same name has
# the notation table (alpha_t, sigma_t, lambda_t, h, x0_theta) and the math this mirrors.

DPM_SPACINGS = reference.DPM_SPACINGS


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha_bar / (1 - alpha_bar)) / 2; +inf where alpha_bar = 1."""
    return 0.5 * (alpha_bar.log() - torch.log1p(-alpha_bar))


def dpm_solver_coefficients(t, s, schedule: Schedule, t_prev=None):
    """ratio = sigma_s / sigma_t, phi = alpha_s (1 - e^{-h}), c = 1 / (2 r) (0 at first order and
    where s = 0), each (B,) float64: the reference's `dpm_solver_coefficients`."""
    if bool((s >= t).any()):
        raise ValueError("s must be earlier than t (s < t) for every sample")
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    h = log_snr(alpha_bar_s) - log_snr(alpha_bar_t)
    ratio = ((1 - alpha_bar_s) / (1 - alpha_bar_t)).sqrt()
    phi = -alpha_bar_s.sqrt() * torch.expm1(-h)
    if t_prev is None:
        return ratio, phi, torch.zeros_like(ratio)
    if bool((t_prev <= t).any()):
        raise ValueError("t_prev must be later than t (t_prev > t) for every sample")
    h_prev = log_snr(alpha_bar_t) - log_snr(schedule.alpha_bar[t_prev])
    c = torch.where(s == 0, torch.zeros_like(h), h / (2 * h_prev))  # Algorithm 2: 1 / (2 r_i)
    return ratio, phi, c


def dpm_solver_step(x_t, eps_theta, t, s, schedule: Schedule, x0_theta_prev=None, t_prev=None):
    """One DPM-Solver++(2M) update from t to s; returns (x_s, x0_theta). See the reference's
    `dpm_solver_step` for the math (Algorithm 2, lines 5 and 6), which this mirrors term by term."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, x0_theta_prev=x0_theta_prev)
    if (x0_theta_prev is None) != (t_prev is None):
        raise ValueError("give x0_theta_prev and t_prev together (second order) or neither")
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    if t_prev is not None:
        t_prev = check_t(t_prev, schedule.T, x_t, name="t_prev")
    dtype = compute_dtype(x_t)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    ratio, phi, c = (a.to(dtype).reshape(shape)
                     for a in dpm_solver_coefficients(t, s, schedule, t_prev))
    x0_theta = predict_x0(x_t, eps_theta, extract(schedule.alpha_bar, t, x_t))
    d = x0_theta
    if x0_theta_prev is not None:
        d = x0_theta + c * (x0_theta - x0_theta_prev.to(dtype))  # Algorithm 2, line 5
    return ratio * x_t.to(dtype) + phi * d, x0_theta  # Algorithm 2, line 6
