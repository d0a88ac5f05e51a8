"""`python -m minidiff sample`: generate sprites from a trained run.

    python -m minidiff sample --run runs/NAME --sampler ddim --steps 25 --n 32 --out samples.png
    python -m minidiff sample --class hero,food --guidance 2 --gif denoise.gif
    python -m minidiff sample --mix hero=1,food=0.6 --mix 1,0,0,0,1 --npy samples.npy

Numbers are read here rather than by argparse so that every bad value is one line and exit 2.
Every file is written atomically. `minidiff eval` shares the sampler flags (`add_sampler_arguments`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from minidiff.utils.atomic import write_npy
from minidiff.utils.errors import MinidiffError
from minidiff.data.images import NORMALIZE, save_gif, save_grid, to_uint8
from minidiff.pipeline import Pipeline, load
from minidiff.samplers import SPACINGS
from minidiff.sampling import SAMPLERS, SamplerConfig, load_kernels


def add_sampler_arguments(parser) -> None:
    """The flags that choose a run and a sampler, shared with `minidiff eval`."""
    parser.add_argument("--run", help="run folder (default: the newest under runs/)")
    parser.add_argument("--ckpt", help="a checkpoint.pt file (instead of --run)")
    parser.add_argument("--weights", default="ema", help="ema (default) or model")
    parser.add_argument("--sampler", default="ddim", help=f"{' | '.join(SAMPLERS)} (default ddim)")
    parser.add_argument("--steps", help="DDIM steps (default 25); DDPM always takes all T")
    parser.add_argument("--eta", help="DDIM noise in [0, 1] (default 0: deterministic)")
    parser.add_argument("--spacing", default="course", help=f"DDIM timesteps: {', '.join(SPACINGS)}")
    parser.add_argument("--guidance", help="classifier-free guidance scale s (needs --class/--mix)")
    parser.add_argument("--seed", default="0", help="noise seed in [0, 2**32) (default 0)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--fused", action="store_true", help="run each step as one Triton kernel")


def add_arguments(parser) -> None:
    add_sampler_arguments(parser)
    parser.add_argument("--n", default="32", help="how many sprites (default 32)")
    parser.add_argument("--class", dest="classes", metavar="CLASS",
                        help="class name or index; a comma list cycles over the batch")
    parser.add_argument("--mix", action="append", metavar="NAME=W,...",
                        help="context vector, e.g. hero=1,food=0.6 or 1,0,0.6,0,0; repeat to cycle")
    parser.add_argument("--out", default="samples.png", help="PNG grid (default samples.png)")
    parser.add_argument("--gif", help="also save the denoising animation (5 fps, per-image look)")
    parser.add_argument("--save-every", help="GIF frame rate in timesteps (DDPM: 20) or DDIM steps")
    parser.add_argument("--npy", help="also save uint8 (N, H, W, C) pixels, contexts beside them")
    parser.add_argument("--normalize", default="clip", help=f"{' | '.join(NORMALIZE)} (default clip)")


def sampler_config(args, T: int) -> SamplerConfig:
    """The SamplerConfig the flags ask for, checked against a T-step schedule."""
    if args.sampler not in SAMPLERS:
        raise MinidiffError(f"--sampler {args.sampler!r} is not one of {', '.join(SAMPLERS)}")
    ddim = args.sampler == "ddim"
    for flag, value in (("--steps", args.steps), ("--eta", args.eta)):
        if value is not None and not ddim:
            raise MinidiffError(f"{flag} is for --sampler ddim; {args.sampler} takes all {T} steps")
    config = SamplerConfig(
        sampler=args.sampler,
        steps=number(args.steps, "--steps", int, low=1) if args.steps is not None else 25,
        eta=number(args.eta, "--eta", float, low=0.0) if args.eta is not None else 0.0,
        spacing=args.spacing,
        guidance=number(args.guidance, "--guidance", float),
        fused=args.fused,
        save_every=number(getattr(args, "save_every", None), "--save-every", int, low=1),
    )
    config.check(T)
    return config


def load_pipeline(args) -> Pipeline:
    if args.run and args.ckpt:
        raise MinidiffError("give --run or --ckpt, not both")
    if args.weights not in ("ema", "model"):
        raise MinidiffError(f"--weights {args.weights!r} is not one of ema, model")
    return load(args.ckpt or args.run, device=args.device, weights=args.weights)


def fused_notice(config: SamplerConfig) -> str | None:
    """The line `--fused` prints when it will run in Triton's interpreter; raises without Triton."""
    if not config.fused:
        return None
    if load_kernels().runtime.backend() == "interpreter":
        return ("--fused: no CUDA GPU here, so the Triton kernels run through the Triton "
                "interpreter on the CPU (much slower, same images)")
    return None


def main(args) -> int:
    pipe = load_pipeline(args)
    config = sampler_config(args, pipe.schedule.T)
    n = number(args.n, "--n", int, low=1)
    seed = number(args.seed, "--seed", int, low=0, high=2**32 - 1)
    if args.normalize not in NORMALIZE:
        raise MinidiffError(f"--normalize {args.normalize!r} is not one of {', '.join(NORMALIZE)}")
    outputs = [Path(p) for p in (args.out, args.gif, args.npy) if p]
    for path in outputs:
        check_writable(path)
    classes = args.classes.split(",") if args.classes else None
    mix = [parse_mix(m) for m in args.mix] if args.mix else None
    c = pipe.contexts(n, classes, mix)  # checked before the (slow) sampling starts
    if config.guidance is not None and c is None:
        raise MinidiffError("--guidance needs --class or --mix: it steers towards a context")
    notice = fused_notice(config)
    if notice:
        print(notice)
    start = time.perf_counter()
    result = pipe.sample(n, sampler=config.sampler, steps=config.steps, eta=config.eta,
                         classes=classes, mix=mix, guidance=config.guidance, seed=seed,
                         fused=config.fused, return_intermediates=bool(args.gif),
                         spacing=config.spacing, save_every=config.save_every)
    seconds = time.perf_counter() - start
    images, frames = result if args.gif else (result, None)
    rows = classes or mix or []  # one column per class or mix listed: they cycle along rows
    save_grid(images, args.out, nrow=len(rows) if len(rows) > 1 else None,
              normalize=args.normalize)
    if args.gif:  # the course's look: per-image min-max, 5 fps
        save_gif(list(frames), args.gif, nrow=len(rows) if len(rows) > 1 else None)
    if args.npy:
        save_npy(args.npy, to_uint8(images, args.normalize), c, n, pipe.n_cfeat)
    wrote = ", ".join(str(p) for p in outputs)
    print(f"{n} sprites, {describe(config, pipe.schedule.T)}, seed {seed}, {seconds:.2f} s "
          f"on {pipe.schedule.device.type} -> {wrote}")
    return 0


def describe(config: SamplerConfig, T: int) -> str:
    """e.g. "DDIM 25 steps (eta 0)" or "DDPM 500 steps, guidance 2"."""
    updates = len(config.timesteps(T)) - 1
    name = {"ddim": "DDIM", "ddpm": "DDPM", "ddpm-no-noise": "DDPM without noise"}[config.sampler]
    text = f"{name} {updates} steps" + (f" (eta {config.eta:g})" if config.sampler == "ddim" else "")
    text += f", guidance {config.guidance:g}" if config.guidance is not None else ""
    return text + (", fused" if config.fused else "")


def parse_mix(text: str):
    """"hero=1,food=0.6" -> {"hero": 1.0, "food": 0.6}; "1,0,0.6,0,0" -> [1.0, 0.0, 0.6, 0.0, 0.0]."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise MinidiffError(f"--mix {text!r} is empty: give e.g. hero=1,food=0.6")
    if all("=" not in item for item in items):
        return [number(item, "--mix", float) for item in items]
    if not all("=" in item for item in items):
        raise MinidiffError(f"--mix {text!r} mixes NAME=W and bare numbers: use one form")
    pairs = [item.split("=", 1) for item in items]
    return {name.strip(): number(weight, f"--mix weight of {name.strip()}", float)
            for name, weight in pairs}


def number(text, flag: str, kind=float, low=None, high=None):
    """Parse one numeric flag, with a one-line error naming the flag and the valid range."""
    if text is None:
        return None
    try:
        value = kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise MinidiffError(f"{flag} {text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise MinidiffError(f"{flag} {text!r} must be finite")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise MinidiffError(f"{flag} {value} is outside the valid range {bounds}")
    return value


def check_writable(path: Path) -> None:
    """Fail before sampling, not after it, when an output cannot be written."""
    if path.is_dir():
        raise MinidiffError(f"{path} is a folder; give a file name such as {path / 'samples.png'}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise MinidiffError(f"cannot write {path}: {existing} is a file, not a folder")


def save_npy(path, pixels: np.ndarray, c, n: int, n_cfeat: int) -> None:
    """uint8 pixels at `path`, and their (n, n_cfeat) float32 contexts at `<stem>_contexts.npy`
    (zeros: the null context), as the course's sprites and labels files."""
    path = Path(path)
    contexts = np.zeros((n, n_cfeat), np.float32) if c is None else c.cpu().float().numpy()
    write_npy(path, pixels)
    write_npy(path.with_name(f"{path.stem}_contexts.npy"), contexts)
