"""Part kernels: every public function of minidiff.kernels (found at run time, so a kernel added
since is timed too), fused vs the eager torch step of the same name vs a device-to-device copy of
the same bytes, timed with triton.testing.do_bench (median), as GB/s of the minimum traffic, at
sprite batches and 16M+ elements (sprite batches fit in the L2 cache, the large sizes do not).

The arguments are filled from the parameters' names, which follow the glossary (x_t, eps_theta,
x0_theta_prev, t, s, seed, k; q_sample's true noise eps, a step's fresh z)."""

from __future__ import annotations

import inspect
import statistics
import time

from gpu_parts.record import Recorder, Sizes, Skip


def run(rec: Recorder, sizes: Sizes, device: str) -> None:
    import torch

    from minidiff.noising import make_schedule

    schedule = make_schedule(device=device)
    kernels = discover_kernels()
    rec.set("discovered", list(kernels))
    shapes = [(b, 3, 16, 16) for b in sizes.sprite_batches] + [(n // 4096, 4096)
                                                              for n in sizes.large]
    for shape in shapes:
        numel, kind = int(torch.Size(shape).numel()), "sprites" if len(shape) == 4 else "large"
        for name, fn in kernels.items():
            rec.attempt({"kernel": name, "shape": list(shape), "numel": numel, "size": kind},
                        lambda: time_kernel(fn, eager_twin(name), shape, schedule, device), 3)
        torch.cuda.empty_cache() if device == "cuda" else None


def time_kernel(fused, eager, shape, schedule, device) -> dict:
    import torch

    inputs = Inputs(shape, device)
    call, kwargs, noise = fused_call(fused, inputs, schedule)
    numel = int(torch.Size(shape).numel())
    nbytes = tensors_bytes(kwargs, numel) + tensors_bytes(call(), numel)
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = {"fused": bench_ms(call, device), "copy": bench_ms(lambda: dst.copy_(src), device)}
    if eager is not None:
        ms["eager"] = bench_ms(eager_call(eager, kwargs, inputs, schedule, noise), device)
    gbps = {f"{k}_gbps": nbytes / (v * 1e-3) / 1e9 for k, v in ms.items()}
    return {"bytes": nbytes, "noise_in_kernel": noise, **{f"{k}_ms": v for k, v in ms.items()},
            **gbps, "copy_share": ms["copy"] / ms["fused"],
            "eager_speedup": ms["eager"] / ms["fused"] if "eager" in ms else None}


# %% how the arguments are found and filled


def discover_kernels() -> dict:
    """Every public function of minidiff.kernels: today's and any added since."""
    from minidiff import kernels

    kernels.load()
    names = getattr(kernels, "__all__", [n for n in dir(kernels) if not n.startswith("_")])
    return {n: getattr(kernels, n) for n in names if inspect.isfunction(getattr(kernels, n, None))}


def eager_twin(name: str):
    """The torch function of the same stem (minidiff.samplers or minidiff.noising), or None."""
    from minidiff import noising, samplers

    return getattr(samplers, name, None) or getattr(noising, name, None)


NOISE = ("eps", "z")  # the glossary: the true noise eps (q_sample's) and a step's fresh z


def is_image(name: str) -> bool:
    """Does a parameter of this name (the glossary's) take an image-sized tensor?"""
    return name.startswith(("x", "eps"))  # x_t, x0, x0_theta_prev, eps_theta; not clip_x0


def timestep_value(name: str) -> int:
    """t = 300 now, s = 280 the jump's target, a previous (multistep) timestep 320."""
    return 320 if "prev" in name else {"t": 300, "s": 280}.get(name.split("_")[0], 260)


def is_timestep(name: str) -> bool:
    return name in ("t", "s", "u", "r") or name.startswith(("t_", "s_"))


class Inputs:
    """Image-sized tensors by parameter name (x_t, eps_theta, x0_theta_prev, ...), made on first
    use and shared by the fused and the eager call, and timesteps by name."""

    def __init__(self, shape, device):
        import torch

        self.shape, self.device, self.tensors = shape, device, {}
        self.generator = torch.Generator(device=device).manual_seed(0)

    def image(self, name: str):
        import torch

        if name not in self.tensors:
            self.tensors[name] = torch.randn(self.shape, device=self.device,
                                             generator=self.generator)
        return self.tensors[name]

    def timestep(self, name: str):
        import torch

        return torch.full((self.shape[0],), timestep_value(name), device=self.device)


def arguments(fn, inputs: Inputs, schedule, noise: bool, draw=()) -> tuple[dict, list]:
    """(keyword arguments for fn by parameter name, names of noise to draw on every call).

    `noise`: pass seed= and k=; `draw`: noise parameters that get fresh torch.randn_like noise
    per call (the eager steps'). Noise a kernel is not drawn for it is None: it draws its own
    from seed= or, where it may, adds none. Raises Skip for a required parameter this cannot
    fill."""
    kwargs, per_call = {}, []
    for p in inspect.signature(fn).parameters.values():
        name, required = p.name, p.default is inspect.Parameter.empty
        if name == "schedule":
            kwargs[name] = schedule
        elif name in draw:
            per_call.append(name)
        elif name in NOISE:
            if required:
                kwargs[name] = None
        elif name == "out":
            continue  # no output buffer: a new tensor, as the sampler uses it
        elif is_image(name):
            kwargs[name] = inputs.image(name)
        elif is_timestep(name):
            kwargs[name] = inputs.timestep(name)
        elif name == "seed" and (noise or required):
            kwargs[name] = 0
        elif name == "k" and (noise or required):
            kwargs[name] = 1
        elif required:
            raise Skip(f"no value for the required parameter {name!r} of {fn.__qualname__}")
    return kwargs, per_call


def fused_call(fn, inputs: Inputs, schedule):
    """(call, kwargs, noise): the kernel without noise where it runs so (DDIM at eta = 0), else
    with seed= and the noise index (DDPM's sigma > 0 refuses to run without noise)."""
    kwargs, _ = arguments(fn, inputs, schedule, noise=False)
    try:
        fn(**kwargs)
    except ValueError:
        kwargs, _ = arguments(fn, inputs, schedule, noise=True)
        fn(**kwargs)
    return (lambda: fn(**kwargs)), kwargs, "seed" in kwargs


def eager_call(fn, fused_kwargs: dict, inputs: Inputs, schedule, noise: bool):
    import torch

    draw = ("eps", "z") if noise else ("eps",)  # q_sample's eps always; z where the kernel drew
    kwargs, per_call = arguments(fn, inputs, schedule, False, draw=draw)
    like = next(v for v in fused_kwargs.values() if isinstance(v, torch.Tensor))

    def call():
        return fn(**kwargs, **{name: torch.randn_like(like) for name in per_call})

    call()
    return call


def tensors_bytes(tree, numel: int) -> int:
    """Bytes of the image-sized tensors in a value, a tuple or a dict's values."""
    import torch

    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, tuple) else [tree]
    return sum(a.numel() * a.element_size() for a in items
               if isinstance(a, torch.Tensor) and a.numel() == numel)


def bench_ms(fn, device: str) -> float:
    """Median milliseconds of fn: do_bench (CUDA events) on a GPU, the wall clock on a CPU."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# %% its section of gpu.md


def markdown(part) -> list[str]:
    lines = ["GB/s of the minimum traffic (image-sized tensors read and written once), float32, "
             "medians of `triton.testing.do_bench`; the eager step draws its noise with "
             "`torch.randn_like`; the copy moves the same bytes device to device.", "",
             "| kernel | shape | MB | fused GB/s | eager GB/s | copy GB/s | fused vs eager "
             "| fused / copy |", "|---|---|---|---|---|---|---|---|"]
    for r in part.get("rows", []):
        shape = "x".join(map(str, r["shape"]))
        if r["status"] != "ok":
            lines.append(f"| {r['kernel']} | {shape} | | {r['status']} | | | | |")
            continue
        speedup = f"{r['eager_speedup']:.2f}x" if r.get("eager_speedup") else "no twin"
        lines.append(f"| {r['kernel']} | {shape} | {r['bytes'] / 1e6:.1f} | {r['fused_gbps']:.0f} "
                     f"| {r.get('eager_gbps', float('nan')):.0f} | {r['copy_gbps']:.0f} | "
                     f"{speedup} | {r['copy_share']:.0%} |")
    return lines
