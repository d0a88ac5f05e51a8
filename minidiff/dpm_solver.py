"""DPM-Solver++(2M) in torch: `minidiff.reference.dpm_solver`, batched, any device.

Lu et al. 2022b, Algorithm 2: a second-order, deterministic solver that reuses the previous
update's x0_theta, so it needs no extra network call per step; and its stochastic twin,
SDE-DPM-Solver++(2M), which adds fresh noise each update as DDIM at eta = 1 does. The reference
module has the notation table (alpha_t, sigma_t, lambda_t, h, x0_theta) and the math this
mirrors term by term.
The sampling loop (`minidiff.samplers.sample_loop`) keeps the previous x0_theta between calls.

Tutorial: tutorials/06_fast_sampling.py.
"""

from __future__ import annotations

import torch

from minidiff.noising import Schedule, check_same_shape, check_t, compute_dtype, extract, predict_x0
from minidiff.reference import dpm_solver as reference
from minidiff.reference import samplers as reference_samplers
from minidiff.reference.dpm_solver import dpm_solver_timesteps  # noqa: F401 (re-exported)

__all__ = ["DPM_SPACINGS", "dpm_solver_coefficients", "dpm_solver_sde_coefficients",
           "dpm_solver_sde_step", "dpm_solver_step", "dpm_solver_timesteps", "log_snr"]

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
    t, s, t_prev = _check_inputs(x_t, eps_theta, t, s, schedule, x0_theta_prev, t_prev)
    dtype, shape = compute_dtype(x_t), (-1,) + (1,) * (x_t.ndim - 1)
    ratio, phi, c = (a.to(dtype).reshape(shape)
                     for a in dpm_solver_coefficients(t, s, schedule, t_prev))
    return _update(x_t, eps_theta, t, schedule, ratio, phi, c, x0_theta_prev)


def _check_inputs(x_t, eps_theta, t, s, schedule: Schedule, x0_theta_prev, t_prev):
    """Both solvers' checks (the reference's `_check_inputs`); returns t, s, t_prev checked."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, x0_theta_prev=x0_theta_prev)
    if (x0_theta_prev is None) != (t_prev is None):
        raise ValueError("give x0_theta_prev and t_prev together (second order) or neither")
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    if t_prev is not None:
        t_prev = check_t(t_prev, schedule.T, x_t, name="t_prev")
    return t, s, t_prev


def _update(x_t, eps_theta, t, schedule: Schedule, ratio, phi, c, x0_theta_prev):
    """(ratio * x_t + phi * D, x0_theta): Algorithm 2, lines 5 and 6, for either solver."""
    x0_theta = predict_x0(x_t, eps_theta, extract(schedule.alpha_bar, t, x_t))
    d = x0_theta
    if x0_theta_prev is not None:
        d = x0_theta + c * (x0_theta - x0_theta_prev.to(ratio.dtype))  # line 5
    return ratio * x_t.to(ratio.dtype) + phi * d, x0_theta  # line 6


def dpm_solver_sde_coefficients(t, s, schedule: Schedule, t_prev=None):
    """ratio = sigma_s / sigma_t e^{-h}, phi = alpha_s (1 - e^{-2h}), c = 1 / (2 r) and
    sigma = sigma_s sqrt(1 - e^{-2h}), each (B,) float64: the reference's
    `dpm_solver_sde_coefficients`."""
    ratio, _, c = dpm_solver_coefficients(t, s, schedule, t_prev)
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    e_minus_h = ratio * (alpha_bar_t / alpha_bar_s).sqrt()  # ratio * alpha_t / alpha_s
    one_minus_e_2h = 1 - e_minus_h**2
    sigma = ((1 - alpha_bar_s) * one_minus_e_2h).sqrt()
    return ratio * e_minus_h, alpha_bar_s.sqrt() * one_minus_e_2h, c, sigma


def dpm_solver_sde_step(x_t, eps_theta, t, s, schedule: Schedule, z=None, x0_theta_prev=None,
                        t_prev=None):
    """One SDE-DPM-Solver++(2M) update from t to s; returns (x_s, x0_theta). See the reference's
    `dpm_solver_sde_step`: x_s = ratio x_t + phi D + sigma z, D as in `dpm_solver_step`."""
    check_same_shape(x_t=x_t, z=z)
    t, s, t_prev = _check_inputs(x_t, eps_theta, t, s, schedule, x0_theta_prev, t_prev)
    dtype, shape = compute_dtype(x_t), (-1,) + (1,) * (x_t.ndim - 1)
    coefficients = dpm_solver_sde_coefficients(t, s, schedule, t_prev)
    if z is None:  # the z=None rule (samplers.check_z, which imports this module), on the host
        reference_samplers.check_z(None, coefficients[3].cpu().numpy(), "dpm_solver_sde_step")
    ratio, phi, c, sigma = (a.to(dtype).reshape(shape) for a in coefficients)
    x_s, x0_theta = _update(x_t, eps_theta, t, schedule, ratio, phi, c, x0_theta_prev)
    return (x_s if z is None else x_s + sigma * z.to(dtype)), x0_theta
