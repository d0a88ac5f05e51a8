"""One DPM-Solver++(2M) update, or one of its SDE twin, fused into a single Triton kernel.

The update (`minidiff.reference.dpm_solver.dpm_solver_step`, Lu et al. 2022b, Algorithm 2) needs
the model's eps_theta, x_t and, from the second update on, the previous update's x0_theta; it
gives x_s and this update's x0_theta, which the next update reads. Eager torch makes a pass per
elementwise op (predict_x0, the correction, the blend); this kernel reads x_t, eps_theta and
x0_theta_prev once and writes x_s and x0_theta once: 12 bytes in and 8 out per float32 element
(8 in at first order), the minimum for the update. No noise: the solver is deterministic.
The SDE twin (`dpm_solver_sde_step`, SDE=True) is the same pass with other coefficients and the
fresh noise z drawn in-kernel (`tl.randn`, philox_seed(seed, k), as the DDIM kernel draws it),
so it moves no more bytes.

Notation as in the reference's DPM-Solver++ section (alpha_t = sqrt(alpha_bar_t), sigma_t,
lambda_t = log(alpha_t / sigma_t), h = lambda_s - lambda_t). Each sample's coefficients come from
the float64 alpha_bar table at its own t, s and t_prev, computed in float64 once per program; the
per-element update runs in float32 whatever the storage dtype.

Tutorial: tutorials/06_fast_sampling.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minidiff.dpm_solver import dpm_solver_sde_coefficients
from minidiff.kernels import launch
from minidiff.kernels.noising import predict_x0
from minidiff.noising import Schedule

__all__ = ["dpm_solver_sde_step", "dpm_solver_step"]


@triton.jit(do_not_specialize=["philox_seed"])
def _dpm_solver_step_kernel(
    x_t_ptr,  # (B, N) x_t, float32/float16/bfloat16, contiguous
    eps_theta_ptr,  # (B, N) eps_theta(x_t, t), the model's noise prediction
    t_ptr,  # (B,) int64 current timestep of each sample, in [1, T]
    s_ptr,  # (B,) int64 timestep to step to, in [0, t)
    alpha_bar_ptr,  # (T + 1,) float64 schedule table alpha_bar_t
    x0_theta_prev_ptr,  # (B, N) the previous update's x0_theta, read when SECOND_ORDER
    t_prev_ptr,  # (B,) int64 timestep x0_theta_prev was predicted at, > t; read when SECOND_ORDER
    x_s_ptr,  # (B, N) x_s; may be x_t_ptr (in place)
    x0_theta_ptr,  # (B, N) this update's x0_theta, for the next; may be x0_theta_prev_ptr
    z_ptr,  # (B, N) fresh noise, read when NOISE == "tensor" (SDE only)
    philox_seed,  # philox_seed(seed, k), used when NOISE == "philox" (SDE only)
    n_per_sample,  # N, elements per sample
    SECOND_ORDER: tl.constexpr,  # Algorithm 2's multistep update; False: first order (DDIM)
    SDE: tl.constexpr,  # dpm_solver_sde_step's coefficients and noise; False: the ODE's
    NOISE: tl.constexpr,  # "philox": draw z in-kernel; "tensor": read z; "none": sigma = 0
    BLOCK: tl.constexpr,  # elements per program, all within one sample
):
    """`minidiff.reference.dpm_solver.dpm_solver_step`: x_s = ratio * x_t + phi * D, or with
    SDE `dpm_solver_sde_step`: x_s = ratio * x_t + phi * D + sigma * z."""
    b, offsets, mask = launch.sample_chunk(n_per_sample, BLOCK)  # sample b, its elements

    # dpm_solver_coefficients, in float64 as the reference
    t, s = tl.load(t_ptr + b), tl.load(s_ptr + b)
    alpha_bar_t = tl.load(alpha_bar_ptr + t)
    alpha_bar_s = tl.load(alpha_bar_ptr + s)
    ratio = tl.sqrt((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t))  # sigma_s / sigma_t
    # e^{-h} = (sigma_s / alpha_s) / (sigma_t / alpha_t), so phi = alpha_s (1 - e^{-h}) is
    phi = tl.sqrt(alpha_bar_s) - ratio * tl.sqrt(alpha_bar_t)
    sigma = 0.0 * ratio
    if SDE:  # dpm_solver_sde_coefficients
        e_minus_h = ratio * tl.sqrt(alpha_bar_t / alpha_bar_s)
        one_minus_e_2h = 1.0 - e_minus_h * e_minus_h
        sigma = tl.sqrt((1.0 - alpha_bar_s) * one_minus_e_2h)
        ratio = ratio * e_minus_h
        phi = tl.sqrt(alpha_bar_s) * one_minus_e_2h

    x_t = tl.load(x_t_ptr + offsets, mask=mask).to(tl.float32)
    eps_theta = tl.load(eps_theta_ptr + offsets, mask=mask).to(tl.float32)
    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)  # DDIM eq. (12), as the DDIM kernel
    d = x0_theta
    if SECOND_ORDER:
        alpha_bar_t_prev = tl.load(alpha_bar_ptr + tl.load(t_prev_ptr + b))
        # 2 h = log(snr_s / snr_t), 2 h_prev = log(snr_t / snr_t_prev), snr = alpha_bar / (1 - ...)
        snr_t = alpha_bar_t / (1.0 - alpha_bar_t)
        sigma2_s = tl.where(s == 0, 1.0, 1.0 - alpha_bar_s)  # s = 0: any non-zero, c is 0 there
        h = tl.log(alpha_bar_s / sigma2_s / snr_t)
        h_prev = tl.log(snr_t * (1.0 - alpha_bar_t_prev) / alpha_bar_t_prev)
        c = tl.where(s == 0, 0.0, h / (2.0 * h_prev))  # Algorithm 2: 1 / (2 r_i); 0 at s = 0
        x0_theta_prev = tl.load(x0_theta_prev_ptr + offsets, mask=mask).to(tl.float32)
        d = x0_theta + c.to(tl.float32) * (x0_theta - x0_theta_prev)  # Algorithm 2, line 5
    x_s = ratio.to(tl.float32) * x_t + phi.to(tl.float32) * d  # Algorithm 2, line 6
    if NOISE == "philox":
        x_s += sigma.to(tl.float32) * tl.randn(philox_seed, offsets)
    elif NOISE == "tensor":
        x_s += sigma.to(tl.float32) * tl.load(z_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(x_s_ptr + offsets, x_s.to(x_s_ptr.dtype.element_ty), mask=mask)
    tl.store(x0_theta_ptr + offsets, x0_theta.to(x0_theta_ptr.dtype.element_ty), mask=mask)


def dpm_solver_step(
    x_t: torch.Tensor,
    eps_theta: torch.Tensor,
    t,
    s,
    schedule: Schedule,
    x0_theta_prev: torch.Tensor | None = None,
    t_prev=None,
    *,
    out: torch.Tensor | None = None,
    x0_theta_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused `minidiff.dpm_solver.dpm_solver_step`: (x_s, x0_theta) in one pass.

    Arguments in the torch twin's order. t, s and t_prev are ints or int tensors of shape (B,).
    Without x0_theta_prev (and t_prev) the update is first order. `out=x_t` and
    `x0_theta_out=x0_theta_prev` update in place. float32/float16/bfloat16 in and out (out's
    dtype wins), float32 arithmetic. Non-contiguous inputs are copied first.
    """
    return _launch(x_t, eps_theta, t, s, schedule, x0_theta_prev, t_prev, out, x0_theta_out)


def dpm_solver_sde_step(
    x_t: torch.Tensor,
    eps_theta: torch.Tensor,
    t,
    s,
    schedule: Schedule,
    z: torch.Tensor | None = None,
    x0_theta_prev: torch.Tensor | None = None,
    t_prev=None,
    *,
    seed: int | None = None,
    k: int | None = None,
    out: torch.Tensor | None = None,
    x0_theta_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused `minidiff.dpm_solver.dpm_solver_sde_step`: (x_s, x0_theta) in one pass.

    As `dpm_solver_step`, plus the fresh noise: read from `z`, or drawn in-kernel from
    philox_seed(seed, k) (k the noise index); neither only where sigma = 0 for every sample
    (`check_z`: s = 0).
    """
    def sigma():
        t_ = launch.check_t(t, schedule.T, x_t)
        s_ = launch.check_t(s, schedule.T, x_t, name="s", low=0)
        return dpm_solver_sde_coefficients(t_, s_, launch.on_device(schedule, x_t))[3]

    noise = launch.noise(seed, k, z, x_t, sigma, "dpm_solver_sde_step")
    return _launch(x_t, eps_theta, t, s, schedule, x0_theta_prev, t_prev, out, x0_theta_out,
                   noise)


def _launch(x_t, eps_theta, t, s, schedule, x0_theta_prev, t_prev, out, x0_theta_out,
            noise=None):
    """Check, allocate and launch `_dpm_solver_step_kernel`; `noise` (the SDE's): the (NOISE
    mode, z argument, Philox seed) of `launch.noise`, None for the ODE."""
    if (x0_theta_prev is None) != (t_prev is None):
        raise ValueError("give x0_theta_prev and t_prev together (second order) or neither")
    batch, n_per_sample, x_t, eps_theta, t, s, schedule = launch.jump_inputs(
        x_t, eps_theta, t, s, schedule)
    second_order = x0_theta_prev is not None
    if second_order:
        x0_theta_prev = launch.contiguous_input("x0_theta_prev", x0_theta_prev, x_t)
        t_prev = launch.check_t(t_prev, schedule.T, x_t, name="t_prev")
        if t_prev.device.type != "cuda" and bool((t_prev <= t).any()):  # would wait for a GPU
            raise ValueError("t_prev must be later than t (t_prev > t) for every sample")
    out = launch.output(out, x_t)
    x0_theta_out = launch.output(x0_theta_out, x_t)
    if x_t.numel() == 0:
        return out, x0_theta_out
    mode, z_arg, philox_seed = noise if noise is not None else ("none", x_t, 0)
    grid, block, num_warps = launch.launch_geometry(batch, n_per_sample)
    _dpm_solver_step_kernel[grid](
        x_t, eps_theta, t, s, schedule.alpha_bar,
        x0_theta_prev if second_order else x_t, t_prev if second_order else t,  # unread stand-ins
        out, x0_theta_out, z_arg, philox_seed, n_per_sample,
        SECOND_ORDER=second_order, SDE=noise is not None, NOISE=mode, BLOCK=block,
        num_warps=num_warps,
    )  # fmt: skip
    return out, x0_theta_out
