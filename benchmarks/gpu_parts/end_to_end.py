"""Part end_to_end: sampling 1,024 sprites with DDPM-500, DDIM-25 and every newer sampler
(sampling.SAMPLERS): the course's loop, sample_loop unfused and fused, the network alone, and the
course and fused loops captured in one CUDA graph (on a CPU, in the dry run, they run uncaptured).
"""

from __future__ import annotations

import time
from dataclasses import replace

from gpu_parts.record import Recorder, Sizes, seconds


def run(rec: Recorder, sizes: Sizes, device: str) -> None:
    import torch

    from minidiff.noising import make_schedule
    from minidiff.unet import UnetConfig, build_unet

    torch.manual_seed(0)  # weights do not change the speed: the default network, untrained
    model = build_unet(UnetConfig(n_feat=sizes.n_feat)).to(device).eval()
    schedule = make_schedule("linear", sizes.T, device=device)
    shape = (sizes.n_sprites, 3, 16, 16)
    rec.set("setup", {"n_sprites": sizes.n_sprites, "n_feat": sizes.n_feat, "T": sizes.T,
                      "parameters": sum(p.numel() for p in model.parameters())})
    with torch.inference_mode():
        for label, config in sampler_cases(sizes):
            for name, loop in loops(model, schedule, shape, config, device).items():
                rec.attempt({"sampler": label, "loop": name},
                            lambda: time_loop(loop, device, sizes.repeats, rec), 5)


def time_loop(loop, device, repeats, rec) -> dict:
    """Best of `repeats` timed runs after one warm-up. ("graph", fn, reference): fn captured
    first (timed too) and its replays timed; its output against reference()'s, if given."""
    extra = {}
    if isinstance(loop, tuple):
        _, fn, reference = loop
        start = time.perf_counter()
        graph, out = capture(fn) if device == "cuda" else (None, fn())
        extra |= {"capture_s": round(time.perf_counter() - start, 3), "captured": graph is not None}
        if reference is not None:
            extra["max_abs_vs_sample_loop"] = float((out - reference()).abs().max())
        loop = graph.replay if graph is not None else fn
    times = [seconds(loop, device)]  # the warm-up: compiles kernels, picks convolution algorithms
    while len(times) <= repeats and rec.left() > 3 * times[-1] + 5:
        times.append(seconds(loop, device))
    best = min(times[1:] or times)
    return {"seconds": round(best, 4), "runs": len(times) - 1 or 1, **extra}


def sampler_cases(sizes: Sizes):
    """(label, SamplerConfig): DDPM, DDIM and every newer sampler sampling.SAMPLERS lists."""
    from minidiff.samplers import SAMPLERS, SamplerConfig

    cases = [(f"DDPM-{sizes.T}", SamplerConfig(sampler="ddpm")),
             (f"DDIM-{sizes.few_steps}", SamplerConfig(sampler="ddim", steps=sizes.few_steps))]
    for name in SAMPLERS:
        if name not in ("ddpm", "ddim", "ddpm-no-noise"):
            cases.append((f"{name}-{sizes.few_steps}",
                          SamplerConfig(sampler=name, steps=sizes.few_steps)))
    return cases


def loops(model, schedule, shape, config, device) -> dict:
    """The loops to time for one sampler: name -> a no-argument run, or ("graph", fn, reference)
    for a loop that time_loop captures first."""
    import torch

    from minidiff.samplers import sample_loop

    n, T = shape[0], schedule.T
    t_table = torch.arange(T + 1, device=device).float() / T
    course = {"ddpm": lambda t=None: course_ddpm(model, schedule, n, t),
              "ddim": lambda t=None: course_ddim(model, schedule, n, config.steps, t)}
    runs = {}
    if config.sampler in course:
        runs["course loop"] = course[config.sampler]
    runs["minidiff"] = lambda: sample_loop(model, schedule, shape, config=replace(config),
                                           seed=0)[0]
    runs["minidiff --fused"] = lambda: sample_loop(model, schedule, shape,
                                                   config=replace(config, fused=True), seed=0)[0]
    visited = config.timesteps(T)
    x = torch.randn(shape, device=device)
    runs["network only"] = lambda: [model(x, torch.full((n,), v / T, device=device))
                                    for v in visited[:-1]]
    if config.sampler in course:  # on a CPU (the dry run) these run uncaptured
        runs["course loop, CUDA graph"] = ("graph", lambda: course[config.sampler](t_table), None)
        runs["fused loop, CUDA graph"] = ("graph", fused_loop(model, schedule, shape, config),
                                          runs["minidiff --fused"])
    return runs


# %% the loops


def course_ddpm(model, schedule, n, t_table=None):
    """The course's DDPM loop (lab 1, `denoise_add_noise`) as its notebook runs it on a GPU: t
    sent to the device every step. `t_table` (i / T on the device) instead makes it capturable."""
    b, a, ab = (v.float() for v in (schedule.beta, schedule.alpha, schedule.alpha_bar))
    T, device = schedule.T, schedule.device
    samples = _randn(n, device)
    for i in range(T, 0, -1):
        t = t_table[i].expand(n) if t_table is not None else _t(i / T, n, device)
        z = _randn(n, device) if i > 1 else 0
        eps = model(samples, t)
        samples = (samples - eps * ((1 - a[i]) / (1 - ab[i]).sqrt())) / a[i].sqrt()
        samples = samples + b[i].sqrt() * z
    return samples


def course_ddim(model, schedule, n, steps, t_table=None):
    """The course's DDIM loop (lab 4, `denoise_ddim`), likewise."""
    ab, T, device = schedule.alpha_bar.float(), schedule.T, schedule.device
    samples = _randn(n, device)
    step_size = T // steps
    for i in range(T, 0, -step_size):
        t = t_table[i].expand(n) if t_table is not None else _t(i / T, n, device)
        eps = model(samples, t)
        prev = i - step_size
        x0_pred = ab[prev].sqrt() / ab[i].sqrt() * (samples - (1 - ab[i]).sqrt() * eps)
        samples = x0_pred + (1 - ab[prev]).sqrt() * eps
    return samples


def _randn(n, device):
    import torch

    return torch.randn(n, 3, 16, 16, device=device)


def _t(value, n, device):
    import torch

    return torch.tensor([value]).to(device).expand(n)


def fused_loop(model, schedule, shape, config, seed=0):
    """sample_loop's fused path with every per-step tensor made first, so that a CUDA graph can
    capture it (sample_loop itself copies its timesteps to the device, which capture forbids)."""
    import torch

    from minidiff.philox import randn_like_step
    from minidiff.samplers import load_kernels

    kernels, T, batch = load_kernels(), schedule.T, shape[0]
    visited = config.timesteps(T)
    t_device = torch.tensor(visited, device=schedule.device)
    t_over_T = t_device.float() / T
    x_T = randn_like_step(torch.empty(shape, device=schedule.device), seed, 0)
    ddpm = config.sampler == "ddpm"
    step = kernels.ddpm_step if ddpm else kernels.ddim_step
    noise = {"seed": seed} if ddpm or config.eta > 0 else {}

    def run():
        x = x_T
        for k in range(1, len(visited)):
            eps_theta = model(x, t_over_T[k - 1].expand(batch)).float()
            t, s = t_device[k - 1].expand(batch), t_device[k].expand(batch)
            knobs = noise | ({"k": k} if noise else {})
            if ddpm:
                x = step(x, eps_theta, t, schedule, **knobs)
            else:
                x = step(x, eps_theta, t, s, schedule, eta=config.eta, **knobs)
        return x

    return run


def capture(fn):
    """(graph, output): fn's launches recorded once into a CUDA graph, after a warm-up run on a
    side stream as torch's CUDA-graph notes ask."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


# %% its section of gpu.md


def markdown(part) -> list[str]:
    setup = part.get("setup", {})
    lines = [f"{setup.get('n_sprites')} sprites, the default network untrained (n_feat "
             f"{setup.get('n_feat')}, {setup.get('parameters')} parameters, fp32), best of the "
             "timed runs after a warm-up.", "",
             "| sampler | loop | seconds | vs course loop | note |", "|---|---|---|---|---|"]
    rows = part.get("rows", [])
    course = {r["sampler"]: r["seconds"] for r in rows
              if r["loop"] == "course loop" and r.get("seconds")}
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['sampler']} | {r['loop']} | | | {r['status']} |")
            continue
        base = course.get(r["sampler"])
        ratio = f"{base / r['seconds']:.2f}x" if base else ""
        note = f"capture {r['capture_s']:.1f} s" if "capture_s" in r else ""
        note = "not captured: no CUDA" if r.get("captured") is False else note
        if "max_abs_vs_sample_loop" in r:
            note += f"; max abs difference from sample_loop: {r['max_abs_vs_sample_loop']:.2g}"
        lines.append(f"| {r['sampler']} | {r['loop']} | {r['seconds']:.3f} | {ratio} | {note} |")
    return lines
