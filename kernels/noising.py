"""The forward process q(x_t | x0), DDPM eq. (4), fused with drawing its noise.

A training step needs x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps *and* eps (the
regression target). Eager torch writes eps with `randn_like`, reads it back, and makes a pass per
elementwise op; this kernel reads x0 once and writes x_t and eps once, with eps drawn in registers
from Triton's Philox (`minidiff.reference.philox`: eps = randn(philox_seed(seed, k), element
index)). Given `eps` instead, it reads it like the reference does. Notation: the glossary in
`minidiff.reference` (reference/__init__.py); `eps` is the TRUE noise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minidiff.kernels import launch
from minidiff.noising import Schedule

__all__ = ["q_sample"]


@triton.jit(do_not_specialize=["philox_seed"])
def _q_sample_kernel(
    x0_ptr,  # (B, N) clean images x0, float32/float16/bfloat16, contiguous
    t_ptr,  # (B,) int64 timestep of each sample, in [0, T]
    alpha_bar_ptr,  # (T + 1,) float64 schedule table alpha_bar_t
    philox_seed,  # philox_seed(seed, k): eps = randn(philox_seed, element index)
    x_t_ptr,  # (B, N) out: the noised images x_t
    eps_ptr,  # (B, N) the noise eps: written when NOISE == "philox", read when "tensor"
    n_per_sample,  # N, elements per sample
    NOISE: tl.constexpr,  # "philox": draw eps in-kernel; "tensor": read eps
    BLOCK: tl.constexpr,  # elements per program, all within one sample
):
    """`minidiff.reference.noising.q_sample` (DDPM eq. (4)), eps read or drawn from Philox."""
    b, offsets, mask = launch.sample_chunk(n_per_sample, BLOCK)  # sample b, its elements

    alpha_bar_t = tl.load(alpha_bar_ptr + tl.load(t_ptr + b))  # float64, as the reference
    sqrt_alpha_bar_t = tl.sqrt(alpha_bar_t).to(tl.float32)
    sqrt_one_minus_alpha_bar_t = tl.sqrt(1.0 - alpha_bar_t).to(tl.float32)

    x0 = tl.load(x0_ptr + offsets, mask=mask).to(tl.float32)
    if NOISE == "philox":
        eps = tl.randn(philox_seed, offsets)
        tl.store(eps_ptr + offsets, eps.to(eps_ptr.dtype.element_ty), mask=mask)
    else:
        eps = tl.load(eps_ptr + offsets, mask=mask).to(tl.float32)
    x_t = sqrt_alpha_bar_t * x0 + sqrt_one_minus_alpha_bar_t * eps  # DDPM eq. (4)
    tl.store(x_t_ptr + offsets, x_t.to(x_t_ptr.dtype.element_ty), mask=mask)


def q_sample(
    x0: torch.Tensor, t, eps: torch.Tensor | None, schedule: Schedule, *, seed: int | None = None,
    k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused `minidiff.noising.q_sample` that can also draw the noise: returns (x_t, eps).

    Give `eps` (a tensor of x0's shape), or eps=None and `seed`: then eps = randn(philox_seed(seed,
    k), element index), so a trainer passes its own step counter as `k` to get fresh noise every
    batch. t is an int or an int tensor of shape (B,) in [0, T]. x_t (and a drawn eps) come back
    in x0's dtype (float32/float16/bfloat16); arithmetic is float32.
    """
    batch, n_per_sample = launch.batch_view("x0", x0)
    t = launch.check_t(t, schedule.T, x0, low=0)
    schedule = launch.on_device(schedule, x0)
    mode, eps_arg, philox_seed = launch.noise(seed, k, eps, x0, name="eps")
    x0 = x0.contiguous()
    x_t = torch.empty_like(x0)
    eps = torch.empty_like(x0) if mode == "philox" else eps_arg
    if x0.numel() == 0:
        return x_t, eps
    grid, block, num_warps = launch.launch_geometry(batch, n_per_sample)
    _q_sample_kernel[grid](
        x0, t, schedule.alpha_bar, philox_seed, x_t, eps, n_per_sample,
        NOISE=mode, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return x_t, eps


@triton.jit
def predict_x0(x_t, eps_theta, alpha_bar_t):
    """`minidiff.reference.noising.predict_x0` inside a kernel (eq. 4 solved for x0): x_t and
    eps_theta float32 blocks, alpha_bar_t a float64 scalar whose two coefficients are made in
    float64."""
    sqrt_one_minus_alpha_bar_t = tl.sqrt(1.0 - alpha_bar_t).to(tl.float32)
    one_over_sqrt_alpha_bar_t = (1.0 / tl.sqrt(alpha_bar_t)).to(tl.float32)
    return (x_t - sqrt_one_minus_alpha_bar_t * eps_theta) * one_over_sqrt_alpha_bar_t
