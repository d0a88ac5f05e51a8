"""One prepared check of minidiff's GPU path: device tests, kernel bandwidth, sampling, training.

    python benchmarks/gpu.py --out DIR                 # on a CUDA machine: under 7 minutes
    python benchmarks/gpu.py --dry-run --out DIR       # on a CPU: tiny sizes, Triton's interpreter
    python benchmarks/gpu.py --out DIR --only kernels,end_to_end --budget 200   # a rerun

It writes DIR/gpu.json (every number), DIR/gpu.md (the tables for benchmarks/RESULTS.md) and
DIR/gpu_parts.log (each part's own output), rewritten after every part, so a part that fails or
runs out of time leaves the others' results and its own failure on record. Each part runs in a
process of its own with a time box (its share of --budget): it saves its rows as it goes, and at
the end of its box it is killed, with the rows it saved kept. The parts (issue 15):

- environment: GPU, driver, CUDA, torch and triton versions;
- tests: `pytest -m cuda tests/cuda` (each kernel against the reference for every dtype, fused ==
  torch pixels, CPU == GPU pixels, bf16 + channels_last and --compile training, a bit-exact
  resume), then the kernels' own property tests (tests/kernels), which run natively on a GPU;
- kernels: every function minidiff.kernels exports (found at run time), fused vs the eager torch
  step of the same name vs a device-to-device copy of the same bytes, timed with
  triton.testing.do_bench (median), as GB/s of the minimum traffic, at sprite batches and 16M+
  elements (sprite batches fit in the L2 cache, the large sizes do not);
- end_to_end: DDPM-500, DDIM-25 (and any newer sampler) for 1,024 sprites: the course's loop,
  sample_loop unfused and fused, the network alone, and loops captured in one CUDA graph;
- training: `Trainer.train_step` with the default recipe vs the course's eager loop, images/s.

`--dry-run` hides any GPU (CUDA_VISIBLE_DEVICES=""), so the same code runs at tiny sizes on the CPU
with the kernels in Triton's interpreter; tests/test_gpu.py runs it. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Each part's time box in seconds at the default budget; --budget scales them all.
BOXES = {"environment": 15, "tests": 170, "kernels": 45, "end_to_end": 95, "training": 75}
DEFAULT_BUDGET = sum(BOXES.values())  # 400 s: an 8-minute device command with room to spare
MARGIN = 8  # seconds a part keeps in hand to save its rows before its box ends
TARGETS = {"copy_share": 0.85, "eager_speedup": 3.0, "ddpm_speedup": 5.0, "pixel_levels": 1}


@dataclass(frozen=True)
class Sizes:
    sprite_batches: tuple  # kernels: (B, 3, 16, 16)
    large: tuple  # kernels: element counts, as rows of 4096
    n_sprites: int  # end to end
    n_feat: int  # the network's width (the default recipe's is 64)
    T: int  # DDPM steps
    few_steps: int  # DDIM (and newer samplers) steps
    batch_size: int  # training
    steps: int  # timed training steps
    warmup: int  # untimed training steps first
    n_images: int  # training images
    repeats: int  # end to end: the best of this many runs


GPU = Sizes((32, 256, 1024, 4096), (2**24, 2**26), 1024, 64, 500, 25, 128, 30, 5, 4096, 2)
DRY = Sizes((4,), (2**12,), 2, 8, 10, 3, 8, 2, 1, 32, 1)


class Skip(Exception):
    """A part or row that cannot run here, with the reason."""


# %% a part's side: its rows, saved as they come


class Recorder:
    """One part's results, rewritten to its file after every change so a killed part keeps them."""

    def __init__(self, path: Path, deadline: float):
        self.path, self.deadline, self.data = path, deadline, {"rows": []}

    def left(self) -> float:
        """Seconds until this part should stop starting new work."""
        return self.deadline - time.time()

    def row(self, **row) -> None:
        self.data["rows"].append(row)
        self.save()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # a reader never sees half a file


def run_boxed(cmd, timeout: float, log, env=None, cwd=REPO) -> str:
    """Run cmd in a session of its own; kill the whole session (children too) at the timeout.
    Returns "ok", "failed (exit N)" or "timeout"."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its process group: the part and what it started
        proc.wait()
        return "timeout"
    return "ok" if code == 0 else f"failed (exit {code})"


# %% environment


def part_environment(rec: Recorder, sizes: Sizes, device: str) -> None:
    import platform

    import numpy
    import torch
    import triton

    from minidiff.kernels import runtime

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "triton": triton.__version__,
            "numpy": numpy.__version__, "kernel_backend": runtime.choose_backend(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "uncommitted_files": len((_git("status", "--porcelain") or "").splitlines())}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                 "multiprocessors": props.multi_processor_count,
                 "memory_gib": round(props.total_memory / 2**30, 1),
                 "nvidia_smi": _command("nvidia-smi", "--query-gpu=name,driver_version,"
                                        "memory.total,clocks.sm,clocks.max.sm",
                                        "--format=csv,noheader")}
    rec.set("environment", info)


def _command(*cmd) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git(*args) -> str | None:
    return _command("git", *args)


# %% tests


def part_tests(rec: Recorder, sizes: Sizes, device: str) -> None:
    env = os.environ | {"CI": "true"}  # Hypothesis's derandomized "ci" profile (tests/conftest.py)
    suites = [("cuda", ["-m", "cuda", "tests/cuda"])]
    if device == "cuda":  # on a CPU tests/kernels runs in the ordinary suite, interpreted
        suites.append(("kernels", ["tests/kernels"]))
    for name, args in suites:
        if name == "kernels" and rec.left() < 40:
            rec.set(name, {"command": "pytest " + " ".join(args), "tests": [], "tail": "",
                           "status": "skipped: out of time"})
            continue
        junit = rec.path.with_name(f"junit_{name}.xml")
        command = [sys.executable, "-m", "pytest", *args, "-v", "-p", "no:cacheprovider",
                   f"--junitxml={junit}"]
        log = rec.path.with_name(f"pytest_{name}.log")
        with open(log, "w") as out:
            status = run_boxed(command, rec.left(), out, env=env)
        tail = log.read_text(errors="replace")[-3000:]
        cases = junit_cases(junit) or logged_cases(log.read_text(errors="replace"))
        rec.set(name, {"command": "pytest " + " ".join(args), "status": status, "tests": cases,
                       "tail": tail})
        if status == "timeout":
            break


def junit_cases(path: Path) -> list[dict]:
    """Each test's outcome, seconds, message and recorded properties, from pytest's JUnit XML."""
    if not path.is_file():
        return []
    cases = []
    for case in ElementTree.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip()[:500]
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message,
                      "properties": properties})
    return cases


def logged_cases(log: str) -> list[dict]:
    """The outcomes `pytest -v` printed, for a run killed before it wrote its JUnit XML."""
    outcomes = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped"}
    found = re.findall(r"^(tests/\S.*?) (PASSED|FAILED|ERROR|SKIPPED)\b", log, re.MULTILINE)
    return [{"test": test, "outcome": outcomes[word], "seconds": 0.0, "message": "(from the log)",
             "properties": {}} for test, word in found]


# %% kernels: fused vs eager vs copy


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


def part_kernels(rec: Recorder, sizes: Sizes, device: str) -> None:
    import torch

    from minidiff.schedules import make_schedule

    schedule = make_schedule(device=device)
    kernels = discover_kernels()
    rec.set("discovered", list(kernels))
    shapes = [(b, 3, 16, 16) for b in sizes.sprite_batches] + [(n // 4096, 4096)
                                                              for n in sizes.large]
    for shape in shapes:
        numel, kind = int(torch.Size(shape).numel()), "sprites" if len(shape) == 4 else "large"
        for name, fn in kernels.items():
            row = {"kernel": name, "shape": list(shape), "numel": numel, "size": kind}
            if rec.left() < 3:
                rec.row(**row, status="skipped: out of time")
                continue
            try:
                row |= time_kernel(fn, eager_twin(name), shape, schedule, device)
                row["status"] = "ok"
            except Skip as why:
                row["status"] = f"skipped: {why}"
            except Exception as error:  # one kernel's failure must not hide the others'
                row["status"] = f"failed: {type(error).__name__}: {error}"[:300]
            rec.row(**row)
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


# %% end to end: sampling 1,024 sprites


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
    from minidiff.sampling import load_kernels

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


def seconds(fn, device) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def sampler_cases(sizes: Sizes):
    """(label, SamplerConfig): DDPM, DDIM and every newer sampler sampling.SAMPLERS lists."""
    from minidiff.sampling import SAMPLERS, SamplerConfig

    cases = [(f"DDPM-{sizes.T}", SamplerConfig(sampler="ddpm")),
             (f"DDIM-{sizes.few_steps}", SamplerConfig(sampler="ddim", steps=sizes.few_steps))]
    for name in SAMPLERS:
        if name not in ("ddpm", "ddim", "ddpm-no-noise"):
            cases.append((f"{name}-{sizes.few_steps}",
                          SamplerConfig(sampler=name, steps=sizes.few_steps)))
    return cases


def loops(model, schedule, shape, label, config, device) -> dict:
    """The loops to time for one sampler: name -> (setup seconds, no-argument run)."""
    import torch

    from minidiff.sampling import sample_loop

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


def part_end_to_end(rec: Recorder, sizes: Sizes, device: str) -> None:
    import torch

    from minidiff.schedules import make_schedule
    from minidiff.unet import UnetConfig, build_unet

    torch.manual_seed(0)  # weights do not change the speed: the default network, untrained
    model = build_unet(UnetConfig(n_feat=sizes.n_feat)).to(device).eval()
    schedule = make_schedule("linear", sizes.T, device=device)
    shape = (sizes.n_sprites, 3, 16, 16)
    rec.set("setup", {"n_sprites": sizes.n_sprites, "n_feat": sizes.n_feat, "T": sizes.T,
                      "parameters": sum(p.numel() for p in model.parameters())})
    with torch.inference_mode():
        for label, config in sampler_cases(sizes):
            for name, run in loops(model, schedule, shape, label, config, device).items():
                row = {"sampler": label, "loop": name}
                if rec.left() < 5:
                    rec.row(**row, status="skipped: out of time")
                    continue
                try:
                    row |= time_loop(run, device, sizes.repeats, rec)
                    row["status"] = "ok"
                except Exception as error:
                    row["status"] = f"failed: {type(error).__name__}: {error}"[:300]
                rec.row(**row)


def time_loop(run, device, repeats, rec) -> dict:
    """Best of `repeats` timed runs after one warm-up. ("graph", fn, reference): fn captured
    first (timed too) and its replays timed; its output against reference()'s, if given."""
    extra = {}
    if isinstance(run, tuple):
        _, fn, reference = run
        start = time.perf_counter()
        graph, out = capture(fn) if device == "cuda" else (None, fn())
        extra |= {"capture_s": round(time.perf_counter() - start, 3), "captured": graph is not None}
        if reference is not None:
            extra["max_abs_vs_sample_loop"] = float((out - reference()).abs().max())
        run = graph.replay if graph is not None else fn
    times = [seconds(run, device)]  # the warm-up: compiles kernels, picks convolution algorithms
    while len(times) <= repeats and rec.left() > 3 * times[-1] + 5:
        times.append(seconds(run, device))
    best = min(times[1:] or times)
    return {"seconds": round(best, 4), "runs": len(times) - 1 or 1, **extra}


# %% training throughput


def part_training(rec: Recorder, sizes: Sizes, device: str) -> None:
    rows = {"course loop": lambda: time_course_training(sizes, device),
            "trainer, default recipe": lambda: time_trainer(sizes, device),
            "trainer, fp32, no channels_last": lambda: time_trainer(
                sizes, device, precision="fp32", channels_last=False)}
    if device == "cuda":
        rows["trainer, --compile"] = lambda: time_trainer(sizes, device, compile=True)
    for name, measure in rows.items():
        if rec.left() < (45 if "compile" in name else 8):
            rec.row(loop=name, status="skipped: out of time")
            continue
        try:
            rec.row(loop=name, images_per_s=round(measure(), 1), status="ok")
        except Exception as error:
            rec.row(loop=name, status=f"failed: {type(error).__name__}: {error}"[:300])


def time_steps(step, sizes: Sizes, device: str) -> float:
    """Images per second over sizes.steps steps, after sizes.warmup untimed ones."""
    for i in range(sizes.warmup):
        step(i)
    return sizes.steps * sizes.batch_size / seconds(
        lambda: [step(sizes.warmup + i) for i in range(sizes.steps)], device)


def time_trainer(sizes: Sizes, device: str, **overrides) -> float:
    """`Trainer.train_step`, exactly what `minidiff train` runs per step (previews aside)."""
    from minidiff.training.config import TrainConfig
    from minidiff.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(n_feat=sizes.n_feat, batch_size=sizes.batch_size,
                             n_images=sizes.n_images, out=f"{out}/run", progress=False,
                             device=device, **overrides)
        trainer = Trainer(config)
        trainer.model.train()
        try:
            return time_steps(trainer.train_step, sizes, device)
        finally:
            trainer.close()


def time_course_training(sizes: Sizes, device: str) -> float:
    """The course's lab loop on the GPU: per-item ToTensor/Normalize in a shuffling DataLoader,
    each batch sent to the device, Adam, eager fp32 (benchmarks/train_speed.py's, moved)."""
    import torch
    from torch.utils.data import DataLoader
    from train_speed import CourseSprites, _forever

    from minidiff.data.sprites import make_sprites
    from minidiff.noising import q_sample
    from minidiff.schedules import make_schedule
    from minidiff.unet import UnetConfig, build_unet

    pixels, index = make_sprites(sizes.n_images, seed=0)
    labels = torch.eye(5)[torch.from_numpy(index)].numpy()
    loader = DataLoader(CourseSprites(pixels, labels), batch_size=sizes.batch_size, shuffle=True,
                        drop_last=True)
    torch.manual_seed(0)
    model = build_unet(UnetConfig(n_feat=sizes.n_feat)).to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = make_schedule("linear", 500, 1e-4, 0.02, device=device)
    batches = iter(_forever(loader))

    def step(_):
        x, c = (a.to(device) for a in next(batches))
        optim.zero_grad()
        noise = torch.randn_like(x)
        t = torch.randint(1, 501, (x.shape[0],), device=device)
        x_pert = q_sample(x, t, noise, schedule)
        mask = torch.bernoulli(torch.zeros(c.shape[0], device=device) + 0.9)
        pred = model(x_pert, t / 500.0, c * mask.unsqueeze(-1))
        torch.nn.functional.mse_loss(pred, noise).backward()
        optim.step()

    return time_steps(step, sizes, device)


PART_FUNCTIONS = {"environment": part_environment, "tests": part_tests, "kernels": part_kernels,
                  "end_to_end": part_end_to_end, "training": part_training}


def run_part(name: str, path: Path, deadline: float, dry_run: bool) -> int:
    """The child process: one part, its rows saved to `path` as they come."""
    rec = Recorder(path, deadline)
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not dry_run and name != "environment":
            raise Skip("no CUDA GPU here (torch.cuda.is_available() is False); --dry-run runs "
                       "this part at tiny sizes on the CPU")
        rec.set("device", device)
        PART_FUNCTIONS[name](rec, DRY if dry_run else GPU, device)
    except Skip as why:
        rec.set("skipped", str(why))
    except Exception:
        rec.set("error", traceback.format_exc()[-3000:])
        return 1
    return 0


# %% the parent: time boxes, then gpu.json and gpu.md after every part


def run_all(out: Path, parts: list[str], budget: float, dry_run: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report = {"schema": 1, "dry_run": dry_run, "started": _now(), "budget_s": budget,
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "parts": {}}
    env = os.environ.copy()
    if dry_run:  # the CPU path everywhere, GPU or not
        env |= {"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"}
    (out / "gpu_parts.log").write_text("")
    with tempfile.TemporaryDirectory(prefix="minidiff_gpu_") as work:
        for name in parts:
            report["parts"][name] = run_one(name, Path(work), budget, dry_run, env, out)
            entry = report["parts"][name]
            print(f"[{name}] {entry['status']} in {entry['seconds']:.0f} s "
                  f"(box {entry['box_s']:.0f} s)", flush=True)
            report |= {"targets": targets(report), "finished": _now()}
            write_json(out / "gpu.json", report)
            (out / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(p["status"] in ("ok", "skipped") for p in report["parts"].values()) else 1


def run_one(name, work: Path, budget, dry_run, env, out: Path) -> dict:
    """Run part `name` in a child process inside its time box; what it saved, and its status."""
    box, start = BOXES[name] * budget / DEFAULT_BUDGET, time.time()
    path, log_path = work / f"{name}.json", work / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-file",
               str(path), "--deadline", str(start + box - MARGIN)] + ["--dry-run"] * dry_run
    with open(log_path, "w") as log:
        status = run_boxed(command, box, log, env=env)
    data = json.loads(path.read_text()) if path.is_file() else {}
    if status == "ok" and "skipped" in data:
        status = "skipped"
    failed = [t for suite in ("cuda", "kernels") for t in data.get(suite, {}).get("tests", [])
              if t["outcome"] in ("failed", "error")]
    failed += [r for r in data.get("rows", []) if r.get("status", "ok").startswith("failed")]
    if status == "ok" and failed:
        status = f"failed ({len(failed)} tests or rows)"
    if name == "tests" and status == "ok":
        status = next((f"failed ({s['status']})" for s in (data.get("cuda"), data.get("kernels"))
                       if s and s["status"] not in ("ok", "skipped: out of time")), status)
    text = log_path.read_text(errors="replace")
    with open(out / "gpu_parts.log", "a") as combined:
        combined.write(f"===== {name}: {status}\n{text}\n")
    entry = {"status": status, "seconds": round(time.time() - start, 1), "box_s": round(box, 1),
             **data}
    if status not in ("ok", "skipped"):
        entry["log_tail"] = text[-2000:]
    return entry


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def targets(report: dict) -> list[dict]:
    """Issue 15's targets against what was measured (`met` is None in a dry run)."""
    parts, found = report["parts"], []

    def add(target, value, met, shown):
        found.append({"target": target, "value": value, "shown": shown,
                      "met": None if report["dry_run"] or value is None else bool(met)})

    rows = [r for r in parts.get("kernels", {}).get("rows", []) if r.get("status") == "ok"]
    for name in dict.fromkeys(r["kernel"] for r in rows):
        share = [r["copy_share"] for r in rows if r["kernel"] == name and r["size"] == "large"]
        speedup = [r["eager_speedup"] for r in rows if r["kernel"] == name
                   and r["size"] == "sprites" and r.get("eager_speedup") is not None]
        if share:
            add(f"{name}: >= {TARGETS['copy_share']:.0%} of copy bandwidth at 16M+ elements "
                "(worst size)", min(share), min(share) >= TARGETS["copy_share"],
                f"{min(share):.0%}")
        if speedup:
            add(f"{name}: >= {TARGETS['eager_speedup']:g}x the eager step at sprite batches "
                "(worst batch)", min(speedup), min(speedup) >= TARGETS["eager_speedup"],
                f"{min(speedup):.2f}x")
    e2e = {(r["sampler"], r["loop"]): r.get("seconds")
           for r in parts.get("end_to_end", {}).get("rows", []) if r.get("status") == "ok"}
    for (sampler, loop), fused in e2e.items():
        course = e2e.get((sampler, "course loop"))
        if sampler.startswith("DDPM") and loop == "minidiff --fused" and course and fused:
            add(f"{sampler}, {report['parts']['end_to_end']['setup']['n_sprites']} sprites: "
                f"sample --fused >= {TARGETS['ddpm_speedup']:g}x the course loop",
                course / fused, course / fused >= TARGETS["ddpm_speedup"], f"{course / fused:.2f}x")
    for case in parts.get("tests", {}).get("cuda", {}).get("tests", []):
        if "cpu_and_gpu" in case["test"] and case["outcome"] != "skipped":
            levels = case["properties"].get("max_level_difference")
            add(f"CPU and GPU pixels for the same seed within {TARGETS['pixel_levels']} level "
                f"({case['test'].split('::')[-1]})", levels, case["outcome"] == "passed",
                f"{levels} levels ({case['outcome']})")
    return found


def markdown(report: dict) -> str:
    parts = report["parts"]
    env = parts.get("environment", {}).get("environment", {})
    where = env.get("gpu") or ("dry run on the CPU" if report["dry_run"] else "no GPU")
    lines = [f"# minidiff GPU check: {where}", "",
             f"{report['started']}, budget {report['budget_s']:.0f} s: `{report['command']}`"]
    if report["dry_run"]:
        lines += ["", "Dry run: tiny sizes on the CPU, the kernels in Triton's interpreter. "
                  "It proves the script runs; its numbers mean nothing."]
    lines += ["", "| part | status | seconds (box) |", "|---|---|---|"]
    lines += [f"| {n} | {p['status']} | {p['seconds']:.0f} ({p['box_s']:.0f}) |"
              for n, p in parts.items()]
    for name, section in (("environment", _md_environment), ("tests", _md_tests),
                          ("kernels", _md_kernels), ("end_to_end", _md_end_to_end),
                          ("training", _md_training)):
        if name in parts:
            part = parts[name]
            lines += ["", f"## {name.replace('_', ' ').capitalize()}", ""]
            if part.get("skipped"):
                lines.append(f"Skipped: {part['skipped']}")
            elif part.get("error"):
                lines.append(f"Failed:\n```\n{part['error'].strip()[-1200:]}\n```")
            lines += section(part) if not part.get("skipped") else []
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    met = {True: "yes", False: "**no**", None: "(dry run)"}
    lines += [f"| {t['target']} | {t['shown']} | {met[t['met']]} |" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def _md_environment(part) -> list[str]:
    return [f"- {k}: {v}" for k, v in part.get("environment", {}).items()]


def _md_tests(part) -> list[str]:
    lines = []
    for suite in ("cuda", "kernels"):
        if suite not in part:
            continue
        cases, s = part[suite]["tests"], part[suite]
        counts = {o: sum(c["outcome"] == o for c in cases)
                  for o in ("passed", "failed", "error", "skipped")}
        lines.append(f"`{s['command']}`: {s['status']}; "
                     + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ".")
        reasons = {c["message"] for c in cases if c["outcome"] == "skipped"}
        if counts["skipped"] == len(cases) and len(reasons) == 1 and cases:
            lines += ["", f"All skipped: {reasons.pop()}", ""]
            continue
        groups = {}  # test function -> its cases (one per parameter set)
        for c in cases:
            module, _, test = c["test"].partition("::")
            groups.setdefault(f"{module.rsplit('.', 1)[-1]}::{test.split('[')[0]}", []).append(c)
        if suite == "kernels":  # only what did not pass
            groups = {k: v for k, v in groups.items() if any(c["outcome"] != "passed" for c in v)}
        if groups:
            lines += ["", "| test | passed | not passed | s | note |", "|---|---|---|---|---|"]
            for test, group in groups.items():
                bad = [c for c in group if c["outcome"] != "passed"]
                notes = "; ".join(dict.fromkeys(_note(c) for c in (bad or group) if _note(c)))
                lines.append(f"| {test} | {len(group) - len(bad)} | "
                             + ", ".join(f"{c['outcome']}" for c in bad[:1])
                             + (f" x{len(bad)}" if bad else "")
                             + f" | {sum(c['seconds'] for c in group):.1f} | {notes[:300]} |")
            lines.append("")
        if s["status"] != "ok":
            lines += ["```", s["tail"][-1500:].strip(), "```", ""]
    return lines


def _note(case) -> str:
    text = "; ".join(f"{k} = {v}" for k, v in case["properties"].items())
    message = case["message"].splitlines()[0][:160] if case["message"] else ""
    return " ".join(x for x in (text, message) if x).replace("|", "/")


def _md_kernels(part) -> list[str]:
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


def _md_end_to_end(part) -> list[str]:
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


def _md_training(part) -> list[str]:
    rows = part.get("rows", [])
    base = next((r.get("images_per_s") for r in rows if r["loop"] == "course loop"), None)
    lines = ["The same network for both; steady-state steps after a warm-up.", "",
             "| loop | images/s | vs course loop |", "|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['loop']} | {r['status']} | |")
            continue
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else ""
        lines.append(f"| {r['loop']} | {r['images_per_s']:.0f} | {ratio} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu.json, gpu.md, gpu_parts.log")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--only", help=f"comma list of parts: {', '.join(BOXES)}")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help=f"seconds for all parts (default {DEFAULT_BUDGET}); scales each box")
    parser.add_argument("--part", choices=tuple(BOXES), help=argparse.SUPPRESS)  # the child
    parser.add_argument("--part-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return run_part(args.part, args.part_file, args.deadline, args.dry_run)
    if args.out is None:
        parser.error("--out DIR is required")
    parts = args.only.split(",") if args.only else list(BOXES)
    unknown = [p for p in parts if p not in BOXES]
    if unknown:
        parser.error(f"--only: unknown part {unknown[0]!r}; the parts are {', '.join(BOXES)}")
    return run_all(args.out, parts, args.budget, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
