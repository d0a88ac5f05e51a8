"""Effective bandwidth of the fused kernels against eager torch and torch.compile of the same
update.

    python benchmarks/kernels.py

On a CUDA machine: for sprite batches (32..4096 x 3 x 16 x 16) and large tensors (2^24..2^27
elements) it times the fused DDPM step (noise in-kernel), DDIM step (eta = 0) and q_sample against
`minidiff.samplers` / `minidiff.noising` run eagerly (with `torch.randn_like` noise) and under
`torch.compile`, all in the same run, and prints GB/s of the minimum traffic (bytes each update
must move) and the ratios. Without CUDA it says so and prints the cost on paper instead: the AOT
PTX of every kernel (`minidiff.kernels.compile`) next to the bytes eager torch moves, counted
op by op with a dispatch mode.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from minidiff import dpm_solver, noising, samplers
from minidiff.noising import make_schedule

SPRITE_BATCHES = (32, 256, 1024, 4096)  # x 3 x 16 x 16
LARGE = tuple(2**k for k in (24, 25, 26, 27))  # elements, as rows of 4096


def eager_updates(schedule):
    """The three updates as eager torch, noise included, as the torch sampler runs them."""

    def ddpm(x_t, eps, t):
        return samplers.ddpm_step(x_t, eps, t, schedule, torch.randn_like(x_t))

    def ddim(x_t, eps, t):
        return samplers.ddim_step(x_t, eps, t, t - 20, schedule)

    def q_sample(x_t, eps, t):
        noise = torch.randn_like(x_t)
        return noising.q_sample(x_t, t, noise, schedule), noise

    def dpm_solver_eager(x_t, eps, t):  # second order; eps stands in for the previous x0_theta
        return dpm_solver.dpm_solver_step(x_t, eps, t, t - 20, schedule, eps, t + 20)

    def dpm_solver_sde_eager(x_t, eps, t):  # the SDE twin, its noise drawn as the sampler does
        return dpm_solver.dpm_solver_sde_step(x_t, eps, t, t - 20, schedule,
                                              torch.randn_like(x_t), eps, t + 20)

    return {"ddpm_step": ddpm, "ddim_step": ddim, "q_sample": q_sample,
            "dpm_solver_step": dpm_solver_eager, "dpm_solver_sde_step": dpm_solver_sde_eager}


def fused_updates(schedule):
    from minidiff import kernels

    kernels.load()  # the GPU here (on_cuda), or Triton's interpreter

    return {
        "ddpm_step": lambda x_t, eps, t: kernels.ddpm_step(x_t, eps, t, schedule, seed=0, k=1),
        "ddim_step": lambda x_t, eps, t: kernels.ddim_step(x_t, eps, t, t - 20, schedule),
        "q_sample": lambda x_t, eps, t: kernels.q_sample(x_t, t, None, schedule, seed=0),
        "dpm_solver_step": lambda x_t, eps, t: kernels.dpm_solver_step(
            x_t, eps, t, t - 20, schedule, eps, t + 20),
        "dpm_solver_sde_step": lambda x_t, eps, t: kernels.dpm_solver_sde_step(
            x_t, eps, t, t - 20, schedule, None, eps, t + 20, seed=0, k=1),
    }


MIN_TENSORS = {"ddpm_step": 3, "ddim_step": 3, "q_sample": 3,  # float32 tensors read + written
               "dpm_solver_step": 5,  # x_t, eps_theta, x0_theta_prev -> x_s, x0_theta
               "dpm_solver_sde_step": 5}  # the same, z drawn in-kernel


def _nbytes(tree, min_numel: int) -> int:
    leaves = [a for a in torch.utils._pytree.tree_leaves(tree) if isinstance(a, torch.Tensor)]
    return sum(a.numel() * a.element_size() for a in leaves if a.numel() >= min_numel)


class Traffic(TorchDispatchMode):
    """Eager torch's memory traffic, op by op: each aten op reads its tensor inputs and writes its
    outputs once (no caching assumed). Only image-sized tensors count (the per-sample coefficient
    work is O(B)); views move nothing; allocation reads nothing; a random or fill op only writes.

    `bytes` and `ops` are the totals; `log` lists each counted pass as (aten op, bytes per
    element), an element being one of the `min_numel` of an image-sized tensor."""

    WRITE_ONLY = ("normal_", "uniform_", "fill_", "zero_", "zeros", "full", "randn_like",
                  "rand_like", "zeros_like", "ones_like", "full_like")  # fmt: skip

    def __init__(self, min_numel: int):
        super().__init__()
        self.min_numel, self.bytes, self.ops, self.log = min_numel, 0, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        written = _nbytes(out, self.min_numel)
        if func.is_view or name.startswith("empty") or not written:
            return out
        self.ops += 1  # image-sized passes
        read = 0 if name in self.WRITE_ONLY else _nbytes((args, kwargs), self.min_numel)
        self.bytes += read + written
        self.log.append((name, (read + written) / self.min_numel))
        return out


def eager_bytes_per_element(name: str, n: int = 32 * 768) -> tuple[float, int]:
    schedule = make_schedule()
    x, eps, t = torch.randn(32, n // 32), torch.randn(32, n // 32), torch.full((32,), 300)
    with Traffic(min_numel=n) as traffic:
        eager_updates(schedule)[name](x, eps, t)
    return traffic.bytes / n, traffic.ops


def on_paper() -> None:
    from minidiff.kernels import compile as aot

    builds = aot.compile_all()
    print(aot.report(builds))
    print(
        "\neager torch (minidiff.samplers / noising, float32, noise from randn_like), per element:"
    )
    for name, tensors in MIN_TENSORS.items():
        per_element, ops = eager_bytes_per_element(name)
        fused = 4 * tensors
        print(f"  {name:10} {per_element:5.1f} B in {ops} passes vs fused {fused} B in 1: "
              f"{per_element / fused:.1f}x the traffic")  # fmt: skip


def gbps(fn, args, nbytes: int) -> float:
    import triton.testing

    ms = triton.testing.do_bench(lambda: fn(*args), warmup=25, rep=100)
    return nbytes / (ms * 1e-3) / 1e9


def on_cuda() -> None:
    schedule = make_schedule(device="cuda")
    eager, fused = eager_updates(schedule), fused_updates(schedule)
    compiled = {name: torch.compile(fn) for name, fn in eager.items()}
    shapes = [(b, 3, 16, 16) for b in SPRITE_BATCHES] + [(n // 4096, 4096) for n in LARGE]
    print(f"{torch.cuda.get_device_name()}: GB/s of the minimum traffic (float32), same run")
    print(f"{'update':10} {'shape':>18} {'fused':>7} {'eager':>7} {'compile':>7} "
          f"{'/eager':>7} {'/compile':>8}")  # fmt: skip
    for shape in shapes:
        x, eps = torch.randn(shape, device="cuda"), torch.randn(shape, device="cuda")
        t = torch.full((shape[0],), 300, device="cuda")
        for name, tensors in MIN_TENSORS.items():
            nbytes = 4 * tensors * x.numel()
            rates = [gbps(f[name], (x, eps, t), nbytes) for f in (fused, eager, compiled)]
            print(f"{name:10} {shape!s:>18} {rates[0]:7.0f} {rates[1]:7.0f} {rates[2]:7.0f} "
                  f"{rates[0] / rates[1]:7.2f} {rates[0] / rates[2]:8.2f}")  # fmt: skip
        del x, eps


if __name__ == "__main__":
    if torch.cuda.is_available():
        on_cuda()
    else:
        print(
            "No CUDA device: nothing to time. The cost on paper, from the AOT PTX for sm_80/sm_90"
        )
        print("(ptxas -v via TRITON_DUMP_PTXAS_LOG=1 and a fresh TRITON_CACHE_DIR):\n")
        on_paper()
