"""One reverse step of DDPM and of DDIM, each fused into a single Triton kernel.

What fusing buys: the eager torch step (`minidiff.samplers`) reads and writes the image several
times (one pass per elementwise op, plus `torch.randn` writing z and the step reading it back).
These kernels read x_t and eps_theta once, draw z in registers with Triton's Philox (the noise
convention of `minidiff.reference.philox`), and write x_{t-1} once: 8 bytes in, 4 out per
float32 element, the minimum for the update.

Notation: the glossary in `minidiff.reference` (reference/__init__.py). Each sample's
coefficients are gathered from the schedule's float64 tables by its own t (and s) and computed in
float64 exactly as the reference does, once per program; the per-element update runs in float32
whatever the storage dtype.

Tutorial: tutorials/07_fused_kernel.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minidiff.kernels import launch
from minidiff.kernels.noising import predict_x0
from minidiff.noising import Schedule
from minidiff.samplers import check_eta, check_variance, ddim_sigma, ddpm_coefficients

__all__ = ["ddim_step", "ddpm_step"]


@triton.jit(do_not_specialize=["philox_seed"])
def _ddpm_step_kernel(
    x_t_ptr,  # (B, N) x_t, float32/float16/bfloat16, contiguous
    eps_theta_ptr,  # (B, N) eps_theta(x_t, t), the model's noise prediction
    t_ptr,  # (B,) int64 timestep of each sample, in [1, T]
    alpha_ptr,  # (T + 1,) float64 schedule table alpha_t
    beta_ptr,  # (T + 1,) float64 schedule table beta_t
    alpha_bar_ptr,  # (T + 1,) float64 schedule table alpha_bar_t
    sigma2_ptr,  # (T + 1,) float64 sigma_t^2: the beta or beta_tilde table
    z_ptr,  # (B, N) fresh noise, read when NOISE == "tensor"
    philox_seed,  # philox_seed(seed, k), used when NOISE == "philox"
    out_ptr,  # (B, N) x_{t-1}; may be x_t_ptr (in place)
    n_per_sample,  # N, elements per sample
    NOISE: tl.constexpr,  # "philox": draw z in-kernel; "tensor": read z; "none": sigma = 0
    BLOCK: tl.constexpr,  # elements per program, all within one sample
):
    """`minidiff.reference.samplers.ddpm_step`: x_{t-1} = s1 * (x_t - s2 * eps_theta) + s3 * z."""
    b, offsets, mask = launch.sample_chunk(n_per_sample, BLOCK)  # sample b, its elements

    # ddpm_coefficients, in float64 as the reference
    t = tl.load(t_ptr + b)
    s1 = 1.0 / tl.sqrt(tl.load(alpha_ptr + t))
    s2 = tl.load(beta_ptr + t) / tl.sqrt(1.0 - tl.load(alpha_bar_ptr + t))

    x_t = tl.load(x_t_ptr + offsets, mask=mask).to(tl.float32)
    eps_theta = tl.load(eps_theta_ptr + offsets, mask=mask).to(tl.float32)
    x_prev = s1.to(tl.float32) * (x_t - s2.to(tl.float32) * eps_theta)  # DDPM eq. (11)
    if NOISE != "none":
        s3 = tl.where(t == 1, 0.0, tl.sqrt(tl.load(sigma2_ptr + t)))  # no noise on the last step
        if NOISE == "philox":
            z = tl.randn(philox_seed, offsets)
        else:
            z = tl.load(z_ptr + offsets, mask=mask).to(tl.float32)
        x_prev += s3.to(tl.float32) * z  # Algorithm 2, line 4
    tl.store(out_ptr + offsets, x_prev.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["philox_seed"])
def _ddim_step_kernel(
    x_t_ptr,  # (B, N) x_t, float32/float16/bfloat16, contiguous
    eps_theta_ptr,  # (B, N) eps_theta(x_t, t), the model's noise prediction
    t_ptr,  # (B,) int64 current timestep of each sample, in [1, T]
    s_ptr,  # (B,) int64 timestep to jump to, in [0, t)
    alpha_bar_ptr,  # (T + 1,) float64 schedule table alpha_bar_t
    eta,  # float: 0 is deterministic DDIM, 1 DDPM-like (Song et al. eq. 16)
    z_ptr,  # (B, N) fresh noise, read when NOISE == "tensor"
    philox_seed,  # philox_seed(seed, k), used when NOISE == "philox"
    out_ptr,  # (B, N) x_s; may be x_t_ptr (in place)
    n_per_sample,  # N, elements per sample
    CLIP_X0: tl.constexpr,  # clamp x0_theta to [-1, 1] before re-noising
    NOISE: tl.constexpr,  # "philox": draw z in-kernel; "tensor": read z; "none": eta = 0
    BLOCK: tl.constexpr,  # elements per program, all within one sample
):
    """`minidiff.reference.samplers.ddim_step`: DDIM eq. (12) with sigma of eq. (16)."""
    b, offsets, mask = launch.sample_chunk(n_per_sample, BLOCK)  # sample b, its elements

    # per-sample coefficients, in float64 as the reference
    alpha_bar_t = tl.load(alpha_bar_ptr + tl.load(t_ptr + b))
    alpha_bar_s = tl.load(alpha_bar_ptr + tl.load(s_ptr + b))
    sigma = eta * tl.sqrt(  # float32 eta times float64: float64
        (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s)
    )  # eq. (16)
    direction = tl.sqrt(tl.maximum(1.0 - alpha_bar_s - sigma * sigma, 0.0))  # "direction to x_t"

    x_t = tl.load(x_t_ptr + offsets, mask=mask).to(tl.float32)
    eps_theta = tl.load(eps_theta_ptr + offsets, mask=mask).to(tl.float32)
    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)  # eq. (12)
    if CLIP_X0:
        x0_theta = tl.minimum(tl.maximum(x0_theta, -1.0), 1.0)
    x_s = tl.sqrt(alpha_bar_s).to(tl.float32) * x0_theta + direction.to(tl.float32) * eps_theta
    if NOISE == "philox":
        x_s += sigma.to(tl.float32) * tl.randn(philox_seed, offsets)
    elif NOISE == "tensor":
        x_s += sigma.to(tl.float32) * tl.load(z_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, x_s.to(out_ptr.dtype.element_ty), mask=mask)


def ddpm_step(
    x_t: torch.Tensor,
    eps_theta: torch.Tensor,
    t,
    schedule: Schedule,
    z: torch.Tensor | None = None,
    variance: str = "beta",
    *,
    seed: int | None = None,
    k: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused `minidiff.samplers.ddpm_step`: x_{t-1} from x_t and eps_theta, in one pass.

    The fresh noise is read from `z`, or drawn in-kernel, z = randn(philox_seed(seed, k), element
    index), where `k` is the noise index (k = 1, 2, ... for the updates; 0 is x_T's). Neither
    means no noise, allowed where sigma = 0 for every sample (`check_z`); with variance="none"
    nothing is added whatever is given. t is an int or an int tensor of shape (B,); samples may
    sit at different t. `out=x_t` updates in place. float32/float16/bfloat16 in and out (out's
    dtype wins), float32 arithmetic. Non-contiguous inputs are copied first.
    """
    check_variance(variance)
    batch, n_per_sample = launch.batch_view("x_t", x_t)
    eps_theta = launch.contiguous_input("eps_theta", eps_theta, x_t)
    t = launch.check_t(t, schedule.T, x_t)
    schedule = launch.on_device(schedule, x_t)
    x_t = x_t.contiguous()
    out = launch.output(out, x_t)
    if variance == "none":  # sigma = 0 everywhere: no fresh noise
        mode, z_arg, philox_seed = "none", x_t, 0
    else:
        def sigma():
            return ddpm_coefficients(t, schedule, variance)[2]

        mode, z_arg, philox_seed = launch.noise(seed, k, z, x_t, sigma, "ddpm_step")
    sigma2 = schedule.beta_tilde if variance == "beta_tilde" else schedule.beta
    if x_t.numel() == 0:
        return out
    grid, block, num_warps = launch.launch_geometry(batch, n_per_sample)
    _ddpm_step_kernel[grid](
        x_t, eps_theta, t, schedule.alpha, schedule.beta, schedule.alpha_bar, sigma2,
        z_arg, philox_seed, out, n_per_sample,
        NOISE=mode, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return out


def ddim_step(
    x_t: torch.Tensor,
    eps_theta: torch.Tensor,
    t,
    s,
    schedule: Schedule,
    eta: float = 0.0,
    z: torch.Tensor | None = None,
    clip_x0: bool = False,
    *,
    seed: int | None = None,
    k: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused `minidiff.samplers.ddim_step`: jump from t to an earlier s in one pass.

    With eta > 0 the noise is read from `z` or drawn in-kernel from philox_seed(seed, k) (k the
    noise index); neither is allowed where sigma = 0 for every sample (`check_z`: s = 0). With
    eta = 0 no noise is used and seed/z are ignored. t and s are ints or int tensors of shape
    (B,). `out=x_t` updates in place. Dtypes as `ddpm_step`.
    """
    check_eta(eta)
    batch, n_per_sample, x_t, eps_theta, t, s, schedule = launch.jump_inputs(
        x_t, eps_theta, t, s, schedule)
    out = launch.output(out, x_t)
    if eta > 0:
        def sigma():
            return ddim_sigma(t, s, schedule, eta)

        mode, z_arg, philox_seed = launch.noise(seed, k, z, x_t, sigma, "ddim_step")
    else:
        mode, z_arg, philox_seed = "none", x_t, 0
    if x_t.numel() == 0:
        return out
    grid, block, num_warps = launch.launch_geometry(batch, n_per_sample)
    _ddim_step_kernel[grid](
        x_t, eps_theta, t, s, schedule.alpha_bar, float(eta), z_arg, philox_seed, out,
        n_per_sample, CLIP_X0=bool(clip_x0), NOISE=mode, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return out
