"""`python -m minidiff sample`: generate sprites from a trained run.

    python -m minidiff sample                    # newest run: one column per class, SDE-DPM++2M-25
    python -m minidiff sample --class hero,food --guidance 2 --gif
    python -m minidiff sample --mix hero=1,food=0.6 --mix 1,0,0,0,1 --npy
    python -m minidiff sample --run runs/NAME --sampler ddpm --n 16 --out ddpm.png

Outputs go to `runs/<run>/samples/<sampler>-<steps>-seed<k>.png` (and `.gif`, `.npy` beside it)
unless a path is given; `minidiff.cli.outputs` has the rules (nothing is written over an earlier
output or an input, everything is checked before the sampling). `minidiff eval` shares the
sampler flags (`add_sampler_arguments`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.cli import flags
from minidiff.cli.outputs import Output, check_outputs, free_stem, made_by, write_together
from minidiff.data.images import NORMALIZE, columns, save_gif, save_grid
from minidiff.pipeline import BATCH_SIZE, MIX_WEIGHTS, Pipeline, load, mix_weight
from minidiff.samplers import ETA, FEW_STEP, SamplerConfig, load_kernels
from minidiff.utils.atomic import write_npy
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import rules
from minidiff.utils.threads import CORES

MAX_N = 100_000  # sprites per command: the uint8 result stays under 100 MB at 16x16
SHOWN = 1024  # the most sprites a PNG grid or GIF shows (the first ones; --npy keeps all)
PER_CLASS = 8  # default rows: 8 draws of every class
# CPU threads. One: on a busy 2-core machine two threads made a 0.3 s sample take 17.6 s (issue
# 16) while one thread took 0.44 s; sprite-sized networks gain little from more.
# benchmarks/sample_threads.py measures it (quiet and busy, 1 to all cores, OMP wait policy).
THREADS = 1
# The sampler flags parse with SamplerConfig's own rules (one owner: minidiff/sampling.py), so a
# bad word is refused by argparse in one line naming the flag, as the config refuses it from Python.
RULES = rules(SamplerConfig)


def add_sampler_arguments(parser, command: str = "sample") -> None:
    """The flags that choose a run, a sampler and the machine, shared with `minidiff eval`."""
    add = parser.add_argument
    add("--run", help="run folder (default: the newest under runs/)")
    add("--ckpt", help="a checkpoint.pt file (instead of --run)")
    add("--weights", type=flags.choice(("ema", "model")), default="ema", metavar="{ema,model}",
        help="the EMA average or the raw trained weights")
    add("--sampler", type=flags.rule_type(RULES["sampler"]), default=SamplerConfig.sampler,
        metavar="{" + ",".join(RULES["sampler"].choices) + "}",
        help="how to walk from noise to images")
    add("--steps", type=flags.rule_type(RULES["steps"]), help=f"DDIM / dpm++2m(-sde) updates "
        f"(default: {SamplerConfig.steps}); DDPM always takes all T")
    add("--eta", type=flags.rule_type(RULES["eta"]), help=f"--sampler ddim's noise: 0 "
        f"deterministic, 1 DDPM-like (default: {ETA:g}: visibly cleaner sprites, see "
        "minidiff/samplers.py)")
    add("--spacing", type=flags.rule_type(RULES["spacing"]), default=None,
        metavar="{" + ",".join(RULES["spacing"].choices) + "}", help="which timesteps DDIM or "
        "dpm++2m(-sde) visit (default: course for DDIM, trailing = T..0 evenly for dpm++2m)")
    steer = ("towards --class or --mix" if command == "sample"
             else "towards the data's classes (a conditional run)")
    add("--guidance", type=flags.rule_type(RULES["guidance"]),
        help=f"classifier-free guidance scale s, steering {steer} (default: off)")
    add("--guidance-interval", type=guidance_interval, metavar="LO,HI",
        help="guide only at timesteps LO <= t <= HI (t in 0..T, not sigma), plain conditional "
             "elsewhere; e.g. 60,410 on T = 500 (default: every t)")
    add("--seed", type=flags.integer(low=0, high=2**32 - 1), default=0, help="noise seed")
    add("--device", default="auto", help="auto | cpu | cuda | mps")
    add("--fused", action="store_true", help="run each step as one Triton kernel")
    add("--threads", type=flags.integer(low=1, high=CORES, why=f"this machine has {CORES} cores"),
        default=THREADS, help="torch CPU threads; more only help on an idle machine")
    add("--batch-size", type=flags.integer(low=1, high=MAX_N), default=BATCH_SIZE,
        help="sprites per network call: bounds memory whatever --n")
    add("--overwrite", action="store_true", help="replace output files that already exist")


def add_arguments(parser) -> None:
    add_sampler_arguments(parser)
    add = parser.add_argument
    add("--n", type=flags.integer(low=1, high=MAX_N), help=f"how many sprites (default: "
        f"{PER_CLASS} rows of the classes asked for, or of every class; 32 unconditional)")
    add("--class", dest="classes", metavar="CLASS",
        help="class names or indices, comma separated: one column each (default: every class)")
    add("--mix", action="append", metavar="NAME=W,...",
        help=f"a context, e.g. hero=1,food=0.6 or 1,0,0.6,0,0 (weights in [{MIX_WEIGHTS[0]:g}, "
             f"{MIX_WEIGHTS[1]:g}]; all zeros: no class); repeat for more columns")
    add("--out", help="the PNG grid (default: runs/<run>/samples/<sampler>-<steps>-seed<k>.png)")
    add("--captions", action="store_true",
        help="write each column's class or mix above it in the grid and the GIF")
    add("--gif", nargs="?", const="", metavar="PATH",
        help="also save the denoising animation, 5 fps (default path: beside the PNG)")
    add("--save-every", type=flags.rule_type(RULES["save_every"]), help="GIF frames every this "
        "many timesteps (DDPM; default: the course's rule) or DDIM steps (default: 1)")
    add("--npy", nargs="?", const="", metavar="PATH",
        help="also save uint8 (N, H, W, C) pixels, contexts beside them (default path: beside "
             "the PNG)")
    add("--normalize", type=flags.choice(NORMALIZE), default="clip",
        metavar="{" + ",".join(NORMALIZE) + "}", help="from [-1, 1] to pixels: clip, or min-max "
        "per image (the course's look)")


def sampler_config(args, T: int) -> SamplerConfig:
    """The SamplerConfig the flags ask for, checked against a T-step schedule."""
    ddim = args.sampler == "ddim"
    if args.eta is not None and not ddim:
        why = {"dpm++2m": "adds no noise",
               "dpm++2m-sde": "always adds its SDE's noise (DDIM eta 1's); for none, use dpm++2m"
               }.get(args.sampler, f"takes all {T} steps")
        raise MinidiffError(f"--eta is for --sampler ddim; {args.sampler} {why}")
    if args.steps is not None and args.sampler not in FEW_STEP:
        raise MinidiffError(f"--steps is for --sampler ddim, dpm++2m or dpm++2m-sde; "
                            f"{args.sampler} takes all {T} steps")
    try:
        config = SamplerConfig(sampler=args.sampler,
                               steps=SamplerConfig.steps if args.steps is None else args.steps,
                               eta=ETA if args.eta is None else args.eta, spacing=args.spacing,
                               guidance=args.guidance, fused=args.fused,
                               save_every=getattr(args, "save_every", None),
                               guidance_interval=args.guidance_interval)
        config.check(T)
    except MinidiffError as error:  # "spacing 'x' ...", "steps=0 ...", "guidance_interval 3,2 ..."
        flag = lambda m: f"--{m[1].replace('_', '-')} "  # noqa: E731  # name the flag typed
        raise MinidiffError(re.sub(r"^([a-z_]+)(=| (?=['\d-]))", flag, str(error))) from None
    return config


def guidance_interval(text: str) -> tuple[int, int]:
    """--guidance-interval "LO,HI": two timesteps; their order and range (0 <= LO <= HI <= T) are
    the config's rule (`SamplerConfig.check`)."""
    parts = text.split(",")
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two timesteps LO,HI such as 60,410") \
            from None
    return lo, hi


def load_pipeline(args) -> Pipeline:
    if args.run and args.ckpt:
        raise MinidiffError("give --run or --ckpt, not both")
    return load(args.ckpt or args.run, device=args.device, weights=args.weights)


@contextlib.contextmanager
def threads(count: int):
    """torch's CPU thread count for one command (restored after, for callers in-process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fused_notice(config: SamplerConfig) -> str | None:
    """The line `--fused` prints when it will run in Triton's interpreter; raises without Triton."""
    if not config.fused:
        return None
    runtime = load_kernels().runtime
    choose = getattr(runtime, "choose_backend", runtime.backend)  # the kernels' API is changing
    if choose() == "interpreter":
        return ("--fused: no CUDA GPU here, so the Triton kernels run through the Triton "
                "interpreter on the CPU (much slower, same images)")
    return None


def run_name(pipe: Pipeline, args) -> str:
    """"runs/X (the newest under runs/)": what the user sampled, said every time."""
    newest = " (the newest under runs/)" if not (args.run or args.ckpt) else ""
    weights = "EMA" if args.weights == "ema" else "raw"
    return f"{run_folder(pipe)}{newest}, {weights} weights"


def main(args) -> int:
    with threads(args.threads):
        return _sample(args)


def _sample(args) -> int:
    pipe = load_pipeline(args)
    config = sampler_config(args, pipe.schedule.T)
    classes, mix = contexts_asked(args, pipe)
    k = len(classes or mix or [])
    n = args.n if args.n is not None else PER_CLASS * k if k else 32
    if args.gif is not None and n > SHOWN:
        raise MinidiffError(f"--gif animates every sprite: use --n <= {SHOWN} with it")
    c = pipe.contexts(n, classes, mix)  # checked before the (slow) sampling starts
    outputs = plan_outputs(args, pipe, config, classes if args.classes is not None else None)
    check_outputs(outputs, [pipe.path], args.overwrite)
    print(f"run {run_name(pipe, args)}")
    notice = fused_notice(config)
    if notice:
        print(notice)
    start = time.perf_counter()
    result = pipe.sample(n, sampler=config.sampler, steps=config.steps, eta=config.eta,
                         classes=classes, mix=mix, guidance=config.guidance, seed=args.seed,
                         fused=config.fused, return_intermediates=args.gif is not None,
                         normalize=args.normalize, spacing=config.spacing,
                         save_every=config.save_every, batch_size=args.batch_size,
                         guidance_interval=config.guidance_interval)
    seconds = time.perf_counter() - start
    pixels, frames = result if args.gif is not None else (result, None)
    width = columns(n, k)
    shown = min(n, SHOWN // width * width)
    captions = (list(map(str, args.mix or classes or [])) or None) if args.captions else None
    writers = {"grid": lambda tmp: save_grid(pixels[:shown], tmp, nrow=width, captions=captions),
               "gif": lambda tmp: save_gif(list(frames[:, :shown]), tmp, nrow=width,
                                           captions=captions),
               "npy": lambda tmp: write_npy(tmp, pixels.numpy()),
               "contexts": lambda tmp: write_npy(tmp, contexts_array(c, n, pipe.n_cfeat))}
    write_together([(o.path, writers[o.role]) for o in outputs])
    if classes:
        layout = f"one column per class ({', '.join(map(str, classes[:width]))})"
    else:
        layout = f"one column per mix ({width})" if mix else f"{width} per row"
    more = f", the grid shows the first {shown}" if shown < n else ""
    print(f"{n} sprites, {layout}{more}: {describe(config, pipe.schedule.T)}, seed {args.seed}, "
          f"{seconds:.2f} s on {pipe.schedule.device.type} ({args.threads} thread"
          f"{'s' if args.threads > 1 else ''})")
    print("wrote " + ", ".join(str(o.path) for o in outputs))
    return 0


def contexts_asked(args, pipe: Pipeline):
    """(classes, mix) from --class/--mix, each checked with the flag's name; every class of a
    conditional run when neither is given."""
    if args.classes is not None and args.mix:
        raise MinidiffError("give --class or --mix, not both (a one-hot class is a mix too)")
    if (args.classes is not None or args.mix) and pipe.n_cfeat == 0:
        flag = "--class" if args.classes is not None else "--mix"
        raise MinidiffError(f"{flag}: this run was trained without classes (n_cfeat=0), so it "
                            f"cannot be conditioned; drop {flag}")
    if args.mix:
        return None, [parse_mix(m) for m in args.mix]
    if args.classes is not None:
        names = [name.strip() for name in args.classes.split(",") if name.strip()]
        if not names:
            raise MinidiffError(f"--class {args.classes!r} names no class: give e.g. hero,food")
        return names, None
    if args.guidance is not None and pipe.n_cfeat == 0:
        raise MinidiffError("--guidance needs a run trained with classes: this one has none")
    return (list(pipe.classes) or list(range(pipe.n_cfeat)) or None), None


def plan_outputs(args, pipe: Pipeline, config: SamplerConfig, named=None) -> list[Output]:
    """The files this command writes: the flags' paths, else default names in the run folder,
    saying what made them (`named`: the classes --class asked for)."""
    stem = made_by(config, pipe.schedule.T, f"seed{args.seed}", classes=named, mix=args.mix)
    folder = run_folder(pipe) / "samples"
    defaults = free_stem(folder, stem, [".png", ".gif", ".npy", "_contexts.npy"])
    base = Path(args.out).with_suffix("") if args.out else defaults
    asked = {"--out": (args.out or "", "grid", ".png"), "--gif": (args.gif, "gif", ".gif"),
             "--npy": (args.npy, "npy", ".npy")}
    outputs = []
    for flag, (value, kind, suffix) in asked.items():
        if value is None:
            continue  # --gif and --npy are off unless typed
        chosen = bool(value) or bool(args.out)
        path = Path(value) if value else Path(f"{base}{suffix}")
        outputs.append(Output(flag, path, kind, chosen, role=kind))
        if flag == "--npy":
            contexts = path.with_name(f"{path.stem}_contexts.npy")
            outputs.append(Output(flag, contexts, "npy", chosen, role="contexts"))
    return outputs


def run_folder(pipe: Pipeline) -> Path:
    """The folder of the run sampled (a --ckpt file's folder)."""
    return pipe.path.parent if pipe.path.is_file() else pipe.path


def describe(config: SamplerConfig, T: int) -> str:
    """e.g. "DDIM 25 steps (eta 1)" or "DDPM 500 steps, guidance 2"."""
    updates = len(config.timesteps(T)) - 1
    name = {"ddim": "DDIM", "ddpm": "DDPM", "ddpm-no-noise": "DDPM without noise",
            "dpm++2m": "DPM-Solver++(2M)", "dpm++2m-sde": "SDE-DPM-Solver++(2M)"
            }.get(config.sampler, config.sampler)
    text = f"{name} {updates} steps"
    text += f" (eta {config.eta:g})" if config.sampler == "ddim" else ""
    text += f", guidance {config.guidance:g}" if config.guidance is not None else ""
    if config.guidance_interval is not None:
        text += " at t in [{}, {}]".format(*config.guidance_interval)
    return text + (", fused" if config.fused else "")


def parse_mix(text: str):
    """"hero=1,food=0.6" -> {"hero": 1.0, "food": 0.6}; "1,0,0.6,0,0" -> [1, 0, 0.6, 0, 0]."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise MinidiffError(f"--mix {text!r} is empty: give e.g. hero=1,food=0.6")
    if all("=" not in item for item in items):
        return [mix_weight(item, "--mix weight") for item in items]
    if not all("=" in item for item in items):
        raise MinidiffError(f"--mix {text!r} mixes NAME=W and bare numbers: use one form")
    pairs = [item.split("=", 1) for item in items]
    return {name.strip(): mix_weight(weight, f"--mix weight of {name.strip()}")
            for name, weight in pairs}


def contexts_array(c, n: int, n_cfeat: int) -> np.ndarray:
    """The (n, n_cfeat) float32 contexts saved beside --npy (zeros: the null context), as the
    course's labels file sits beside its sprites."""
    return np.zeros((n, n_cfeat), np.float32) if c is None else c.cpu().float().numpy()
