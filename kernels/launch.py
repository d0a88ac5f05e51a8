"""Host-side plumbing shared by the kernel wrappers: argument checks, noise choice, launch geometry.

Notation: the glossary in `minidiff.reference` (reference/__init__.py). Every kernel here works on
a batch viewed as (B, N): B samples of N = `n_per_sample` = numel / B elements each, in C order.
One program updates one BLOCK-sized chunk of one sample, so each sample's coefficients
(gathered from the schedule by its own t) are scalars of the program, and the element index
b * N + i is both the memory offset and the Philox counter of the noise convention.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minidiff import noising
from minidiff.noising import Schedule, check_same_shape
from minidiff.philox import philox_seed
from minidiff.samplers import check_s_before_t, check_z

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_BLOCK = 2048  # elements per program; 8 per thread, as two 16-byte loads of float32


def batch_view(name: str, x: torch.Tensor) -> tuple[int, int]:
    """(B, N) for a tensor of shape (B, ...), checking what the kernels accept."""
    if x.dtype not in FLOAT_DTYPES:
        valid = ", ".join(str(d) for d in FLOAT_DTYPES)
        raise ValueError(f"{name} has dtype {x.dtype}; the kernels take {valid}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got shape {tuple(x.shape)}")
    if x.numel() >= 2**31:
        raise ValueError(f"{name} has {x.numel()} elements; int32 offsets stop at 2**31")
    batch = x.shape[0]
    return batch, (x.numel() // batch if batch else 0)


def contiguous_input(name: str, a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`a` checked against x's shape and device, made contiguous (one copy if it was not)."""
    check_same_shape(x=like, **{name: a})
    if a.device != like.device:
        raise ValueError(f"{name} is on {a.device} but x is on {like.device}")
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {a.dtype}; the kernels take float32/16, bfloat16")
    return a.contiguous()


def output(out: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The tensor to write: `out` if given (x itself for in place), else a new one like x."""
    if out is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    if out.shape != like.shape or out.device != like.device or out.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"out must be a float tensor of shape {tuple(like.shape)} on {like.device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if not out.is_contiguous():
        raise ValueError("out must be contiguous: the kernels write it as one flat array")
    return out


def check_t(t, T: int, x: torch.Tensor, name: str = "t", low: int = 1) -> torch.Tensor:
    """`minidiff.noising.check_t`, except that a CUDA tensor is not range-checked: reading it
    would wait for the GPU. Returns t as a contiguous int64 (B,) tensor on x's device."""
    if isinstance(t, torch.Tensor) and t.device.type == "cuda":
        if t.dtype not in (torch.int32, torch.int64) or t.shape != (x.shape[0],):
            raise ValueError(f"{name} must be an int tensor of shape ({x.shape[0]},)")
        return t.to(torch.int64).contiguous()  # range check skipped: it would wait for the GPU
    return noising.check_t(t, T, x, name=name, low=low).contiguous()


def jump_inputs(x_t: torch.Tensor, eps_theta: torch.Tensor, t, s, schedule: Schedule):
    """The checks every wrapper of a step from t to an earlier s starts with (DDIM, DPM-Solver++):
    x_t and eps_theta (made contiguous), t in [1, T], s in [0, T] and s < t (read only off a GPU:
    there it would wait), the schedule on x_t's device. Returns (batch, n_per_sample, x_t,
    eps_theta, t, s, schedule)."""
    batch, n_per_sample = batch_view("x_t", x_t)
    eps_theta = contiguous_input("eps_theta", eps_theta, x_t)
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    if s.device.type != "cuda":  # the order check would wait for the GPU
        check_s_before_t(t, s)
    return batch, n_per_sample, x_t.contiguous(), eps_theta, t, s, on_device(schedule, x_t)


def on_device(schedule: Schedule, x: torch.Tensor) -> Schedule:
    """The schedule's float64 tables on x's device (move it once yourself to avoid a copy)."""
    if not isinstance(schedule, Schedule):
        raise TypeError("schedule must be a minidiff.noising.Schedule (make_schedule)")
    return schedule if schedule.device == x.device else schedule.to(x.device)


def noise(seed: int | None, k: int | None, z: torch.Tensor | None, x: torch.Tensor,
          sigma=None, caller: str = "", name: str = "z"):
    """(NOISE mode, z argument, Philox seed) for a kernel that adds sigma * z.

    `z` (a tensor) or `seed` with `k` (draw z in-kernel: the k of philox_seed(seed, k), the
    convention of `minidiff.reference.philox`), not both. Neither means no fresh noise ("none"),
    allowed under `check_z`'s rule: `sigma()` gives each sample's sigma, read only then. Without
    `sigma` the noise is required.
    """
    if seed is not None and z is not None:
        raise ValueError(f"give either seed= (with k=) for in-kernel noise or {name}=, not both")
    if z is not None:
        return "tensor", contiguous_input(name, z, x), 0
    if seed is not None:
        if k is None:
            raise ValueError("seed= needs k=: the k in philox_seed(seed, k) of this update")
        return "philox", x, philox_seed(seed, k)  # z_ptr unused: x stands in
    if sigma is None:
        raise ValueError(f"give either seed= (with k=) for in-kernel noise or {name}=")
    check_z(None, sigma(), caller)
    return "none", x, 0


@triton.jit
def sample_chunk(n_per_sample, BLOCK: tl.constexpr):
    """Inside a kernel: this program's sample b, its element offsets b * N + i, and their mask.

    The device side of `launch_geometry`: program p updates chunk p % chunks of sample p // chunks.
    """
    pid = tl.program_id(0)
    chunks = tl.cdiv(n_per_sample, BLOCK)
    b = pid // chunks  # this program's sample
    i = (pid % chunks) * BLOCK + tl.arange(0, BLOCK)
    offsets = b * n_per_sample + i  # element index: memory offset and Philox counter
    return b, offsets, i < n_per_sample


def launch_geometry(batch: int, n_per_sample: int) -> tuple[tuple[int], int, int]:
    """(grid, BLOCK, num_warps): one program per BLOCK chunk of each sample."""
    block = min(MAX_BLOCK, triton.next_power_of_2(max(n_per_sample, 16)))
    num_warps = max(1, min(8, block // 256))  # 8 elements per thread
    return (batch * triton.cdiv(n_per_sample, block),), block, num_warps
