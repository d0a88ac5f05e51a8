"""How fast minidiff samples, against a plain course-style loop with the same network.

    python benchmarks/sample_speed.py                      # default network, 32 sprites, CPU
    python benchmarks/sample_speed.py --run runs/NAME --threads 2 --repeats 3

Weights do not change the speed, so without --run the default ContextUnet is built untrained.
For DDPM-500 and DDIM-25 it times, in the same process and on the same inputs:
- "course loop": the course's loop as written in its labs (torch.randn noise, no checks);
- "minidiff": `minidiff.samplers.sample_loop` (Philox noise, argument checks, float64 coefficients);
- "network only": the forward passes alone, so that (minidiff - network) / minidiff is the loop's
  overhead outside the network, and the Philox noise's share of it is shown separately.
Each number is the fastest of --repeats runs, interleaved (see `fastest_interleaved`).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from minidiff.noising import make_schedule
from minidiff.philox import randn_like_step
from minidiff.pipeline import load
from minidiff.samplers import SamplerConfig, sample_loop
from minidiff.unet import UnetConfig, build_unet


def course_ddpm(model, schedule, n, T):
    """The course's DDPM sampling loop (lab 1), with its `denoise_add_noise`."""
    b, a, ab = (v.float() for v in (schedule.beta, schedule.alpha, schedule.alpha_bar))
    samples = torch.randn(n, 3, 16, 16)
    for i in range(T, 0, -1):
        t = torch.tensor([i / T])[:, None, None, None]
        z = torch.randn_like(samples) if i > 1 else 0
        eps = model(samples, t.reshape(1).expand(n))
        mean = (samples - eps * ((1 - a[i]) / (1 - ab[i]).sqrt())) / a[i].sqrt()
        samples = mean + b[i].sqrt() * z
    return samples


def course_ddim(model, schedule, n, T, steps):
    """The course's DDIM loop (lab 4), with its `denoise_ddim`."""
    ab = schedule.alpha_bar.float()
    samples = torch.randn(n, 3, 16, 16)
    step_size = T // steps
    for i in range(T, 0, -step_size):
        t = torch.tensor([i / T])[:, None, None, None]
        eps = model(samples, t.reshape(1).expand(n))
        prev = i - step_size
        x0_pred = ab[prev].sqrt() / ab[i].sqrt() * (samples - (1 - ab[i]).sqrt() * eps)
        samples = x0_pred + (1 - ab[prev]).sqrt() * eps
    return samples


def network_only(model, n, visited, T, guided=False):
    x = torch.randn((2 if guided else 1) * n, 3, 16, 16)
    for t in visited[:-1]:
        model(x, torch.full((len(x),), t / T))


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fastest_interleaved(fns: dict, repeats: int) -> dict:
    """The fastest of `repeats` timings of each function, run in turn (a, b, c, a, b, c, ...) so
    that a burst of load from other processes hits all of them alike; the minimum is the run the
    load disturbed least."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run folder (default: an untrained default network)")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        pipe = load(args.run, device="cpu")
        model, schedule = pipe.model, pipe.schedule
    else:
        torch.manual_seed(0)
        model, schedule = build_unet(UnetConfig()).eval(), make_schedule()
    T, n = schedule.T, args.n
    print(f"# {n} sprites, {args.threads} threads, load average {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__}, {sum(p.numel() for p in model.parameters())} parameters")
    print("| sampler | course loop (s) | minidiff (s) | network only (s) | overhead "
          "| Philox share |")
    print("|---|---|---|---|---|---|")
    cases = [("DDPM-500", SamplerConfig("ddpm"), lambda: course_ddpm(model, schedule, n, T)),
             ("DDIM-25", SamplerConfig("ddim", steps=25),
              lambda: course_ddim(model, schedule, n, T, 25))]
    x = torch.empty(n, 3, 16, 16)
    with torch.inference_mode():
        sample_loop(model, schedule, (n, 3, 16, 16), None, SamplerConfig(steps=2))  # warm up
        philox = min(seconds(lambda: [randn_like_step(x, 0, k) for k in range(25)])
                     for _ in range(5)) / 25
        for name, config, course in cases:
            visited = config.timesteps(T)
            best = fastest_interleaved({
                "course": course,
                "minidiff": lambda c=config: sample_loop(model, schedule, (n, 3, 16, 16), None, c),
                "network": lambda v=visited: network_only(model, n, v, T),
            }, args.repeats)
            ours, net = best["minidiff"], best["network"]
            noisy_steps = (len(visited) - 2) if config.sampler == "ddpm" else 1  # x_T only
            print(f"| {name} | {best['course']:.2f} | {ours:.2f} | {net:.2f} | "
                  f"{(ours - net) / ours:.1%} | {philox * noisy_steps / ours:.1%} |", flush=True)
    print(f"# Philox noise for one step of {n} sprites: {philox * 1e3:.2f} ms "
          f"(torch.randn: {seconds(lambda: torch.randn(n, 3, 16, 16)) * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
