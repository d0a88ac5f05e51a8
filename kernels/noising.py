"""The forward process q(x_t | x0), DDPM eq. (4), fused with drawing its noise.

A training step needs x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps *and* eps (the
regression target). Eager torch writes eps with `randn_like`, reads it back, and makes a pass per
elementwise op; this kernel reads x0 once and writes x_t and eps once, with eps drawn in registers
from Triton's Philox (`minidiff.reference.philox`: eps = randn(philox_seed(seed, step), element
index)). Notation as in `minidiff.reference.noising`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minidiff.schedules import Schedule
from minidiff.kernels import launch

__all__ = ["q_sample"]


@triton.jit(do_not_specialize=["philox_seed"])
def _q_sample_kernel(
    x0_ptr,  # (B, N) clean images x0, float32/float16/bfloat16, contiguous
    t_ptr,  # (B,) int64 timestep of each sample, in [0, T]
    alpha_bar_ptr,  # (T + 1,) float64 schedule table alpha_bar_t
    philox_seed,  # philox_seed(seed, step): eps = randn(philox_seed, element index)
    x_t_ptr,  # (B, N) out: the noised images x_t
    eps_ptr,  # (B, N) out: the noise eps that was added
    per_sample,  # N, elements per sample
    BLOCK: tl.constexpr,  # elements per program, all within one sample
):
    """`minidiff.reference.noising.q_sample` with eps = Philox normals: DDPM eq. (4)."""
    b, offsets, mask = launch.sample_chunk(per_sample, BLOCK)  # sample b, its elements

    alpha_bar_t = tl.load(alpha_bar_ptr + tl.load(t_ptr + b))  # float64, as the reference
    sqrt_alpha_bar_t = tl.sqrt(alpha_bar_t).to(tl.float32)
    sqrt_one_minus_alpha_bar_t = tl.sqrt(1.0 - alpha_bar_t).to(tl.float32)

    x0 = tl.load(x0_ptr + offsets, mask=mask).to(tl.float32)
    eps = tl.randn(philox_seed, offsets)
    x_t = sqrt_alpha_bar_t * x0 + sqrt_one_minus_alpha_bar_t * eps  # DDPM eq. (4)
    tl.store(x_t_ptr + offsets, x_t.to(x_t_ptr.dtype.element_ty), mask=mask)
    tl.store(eps_ptr + offsets, eps.to(eps_ptr.dtype.element_ty), mask=mask)


def q_sample(
    x0: torch.Tensor, t, schedule: Schedule, *, seed: int, step: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused `minidiff.noising.q_sample` that also draws the noise: returns (x_t, eps).

    eps = randn(philox_seed(seed, step), element index), so a trainer passes its own step counter
    as `step` to get fresh noise every batch. t is an int or an int tensor of shape (B,) in [0, T].
    x_t and eps come back in x0's dtype (float32/float16/bfloat16); arithmetic is float32.
    """
    batch, per_sample = launch.batch_view("x0", x0)
    t = launch.timesteps(t, schedule.T, x0, low=0)
    schedule = launch.on_device(schedule, x0)
    _, _, philox_seed = launch.noise(seed, step, None, x0)
    x0 = x0.contiguous()
    x_t, eps = torch.empty_like(x0), torch.empty_like(x0)
    if x0.numel() == 0:
        return x_t, eps
    grid, block, num_warps = launch.launch_geometry(batch, per_sample)
    _q_sample_kernel[grid](
        x0, t, schedule.alpha_bar, philox_seed, x_t, eps, per_sample,
        BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return x_t, eps
