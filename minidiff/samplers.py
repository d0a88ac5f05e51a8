"""Reverse steps in torch: `minidiff.reference.samplers`, batched, any device.

Notation as in the reference: `x_t`, `eps` (the model's eps_theta), `z` fresh noise, `t` and `s`
per-sample integer timesteps, `sigma` the added noise's standard deviation, `c` the context
(one-hot class or any real vector; zeros are the "null" context). Arithmetic runs in float32 or
wider (see `schedules.compute_dtype`) and results come back in that dtype.

The loops that call these steps, and guidance, live in `minidiff/sampling.py`.

Tutorials: tutorials/02_sampling.py (DDPM), tutorials/06_fast_sampling.py (DDIM).
"""

from __future__ import annotations

import torch

from minidiff.reference.samplers import SPACINGS, VARIANCES, ddim_timesteps
from minidiff.schedules import Schedule, check_timesteps, compute_dtype, extract

__all__ = ["SPACINGS", "VARIANCES", "ddim_step", "ddim_timesteps", "ddpm_coefficients", "ddpm_step"]


def ddpm_coefficients(t: torch.Tensor, schedule: Schedule, variance: str = "beta"):
    """s1 = 1/sqrt(alpha_t), s2 = beta_t/sqrt(1 - alpha_bar_t), s3 = sigma_t for each t (float64).

    sigma_t^2 = beta_t ("beta"), beta~_t ("beta_tilde") or 0 ("none"); s3 = 0 where t = 1.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance={variance!r} is not one of {', '.join(VARIANCES)}")
    s1 = schedule.alpha[t].rsqrt()
    s2 = schedule.beta[t] / (1 - schedule.alpha_bar[t]).sqrt()
    sigma2 = {"beta": schedule.beta, "beta_tilde": schedule.beta_tilde}.get(variance)
    s3 = torch.zeros_like(s1) if sigma2 is None else sigma2[t].sqrt()
    s3 = torch.where(t == 1, torch.zeros_like(s3), s3)  # Algorithm 2, line 3: no noise at the end
    return s1, s2, s3


def ddpm_step(x_t, eps, t, schedule: Schedule, z, variance: str = "beta") -> torch.Tensor:
    """x_{t-1} = s1 * (x_t - s2 * eps) + s3 * z (DDPM Algorithm 2, line 4; the course's
    `denoise_add_noise`). `z` may be None when no step in the batch adds noise."""
    _check_same_shape(x_t=x_t, eps=eps, z=z)
    t = check_timesteps(t, schedule.T, x_t)
    dtype = compute_dtype(x_t)
    s1, s2, s3 = (c.to(dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))
                  for c in ddpm_coefficients(t, schedule, variance))
    x = s1 * (x_t.to(dtype) - s2 * eps.to(dtype))
    if z is None:
        if variance != "none" and bool((t > 1).any()):
            raise ValueError(f"ddpm_step with variance={variance!r} at t > 1 needs fresh noise z")
        return x
    return x + s3 * z.to(dtype)


def ddim_step(x_t, eps, t, s, schedule: Schedule, eta=0.0, z=None, clip_x0=False) -> torch.Tensor:
    """Jump from t to an earlier s (DDIM eq. 12, sigma from eq. 16); see the reference's
    `ddim_step` for the three lines of math, which this mirrors term by term."""
    _check_same_shape(x_t=x_t, eps=eps, z=z)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} is outside the valid range [0, 1]")
    t = check_timesteps(t, schedule.T, x_t)
    s = check_timesteps(s, schedule.T, x_t, name="s", low=0)
    if bool((s >= t).any()):
        raise ValueError(f"s={int(s[s >= t][0])} must be earlier than t (s < t) for every sample")
    if eta > 0 and z is None:
        raise ValueError("ddim_step with eta > 0 needs fresh noise z of x_t's shape")
    dtype = compute_dtype(x_t)
    alpha_bar_t = extract(schedule.alpha_bar, t, x_t)  # float64: coefficients first, cast once
    alpha_bar_s = extract(schedule.alpha_bar, s, x_t)
    sigma = eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)).sqrt()
    direction = (1 - alpha_bar_s - sigma**2).clamp_min(0).sqrt()  # eq. (12) "direction to x_t"
    x_t, eps = x_t.to(dtype), eps.to(dtype)
    # eq. (12): the "predicted x0"
    x0_pred = (x_t - (1 - alpha_bar_t).sqrt().to(dtype) * eps) / alpha_bar_t.sqrt().to(dtype)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
    x_s = alpha_bar_s.sqrt().to(dtype) * x0_pred + direction.to(dtype) * eps
    return x_s if z is None else x_s + sigma.to(dtype) * z.to(dtype)


def _check_same_shape(**tensors) -> None:
    (first_name, first), *rest = tensors.items()
    for name, a in rest:
        if a is not None and a.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)} but {first_name} has {tuple(first.shape)}")
