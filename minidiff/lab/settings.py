"""What one page asks the lab for, read from the page's raw values and checked in one line each.

The page sends whatever its widgets hold (a number, a string, None); `read_request` turns them
into a `Request` or raises a one-line MinidiffError that the page shows in its status line. Each
rule has one owner: the sampler's ranges are `SamplerConfig`'s, a context weight's range is
`minidiff.pipeline.mix_weight`'s; the lab adds only its own caps (`MAX_N`), so one request cannot
hold a 2-core machine for minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minidiff.pipeline import Pipeline, mix_weight
from minidiff.samplers import ETA, FEW_STEP, SAMPLERS, SamplerConfig
from minidiff.utils.errors import MinidiffError

__all__ = ["EVERY_CLASS", "MAX_N", "MIX", "NO_CLASS", "Request", "context_choices", "number",
           "read_request"]

MAX_N = 32  # sprites per request: DDPM-500 then keeps 500 x 32 x 4 frames, under 50 MB a page
MAX_SEED = 2**32 - 1  # the noise seed's range (`minidiff.philox`)
EVERY_CLASS = "every class"  # one column per class, as `minidiff sample` draws them
MIX = "mix (the weights below)"  # the course's context vectors, one weight per class
NO_CLASS = "no class (null context)"  # the zero vector the network was trained on 10% of the time


@dataclass(frozen=True)
class Request:
    """One sampling run the page asked for, checked."""

    config: SamplerConfig
    n: int
    classes: list | None  # class names cycled over the batch, or None
    mix: list | None  # [{name: weight}], or None
    seed: int


def context_choices(pipe: Pipeline) -> list[str]:
    """The contexts a page may choose: every class, one class, a mix, or none."""
    if pipe.n_cfeat == 0:
        return [NO_CLASS]
    names = pipe.classes or [str(i) for i in range(pipe.n_cfeat)]
    return [EVERY_CLASS, *names, MIX, NO_CLASS]


def number(value, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """`value` as a finite number in [low, high] (an integer where `integer`), else one line."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise MinidiffError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(result) or not low <= result <= high:
        raise MinidiffError(f"{name} {value!r} is outside [{low:g}, {high:g}]")
    if integer:
        if result != int(result):
            raise MinidiffError(f"{name} {value!r} is not a whole number")
        return int(result)
    return result


def read_request(pipe: Pipeline, *, context, weights, guidance, sampler, steps, eta, n,
                 seed) -> Request:
    """The page's raw values as a Request. `weights` holds one weight per class (used when
    `context` is MIX); guidance 1 is the plain conditional eps_theta, so it runs unguided (the
    same images at half the cost)."""
    choices = context_choices(pipe)
    if context not in choices:
        raise MinidiffError(f"context {context!r} is not one of {', '.join(choices)}")
    if sampler not in SAMPLERS:
        raise MinidiffError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    n = number(n, "n", 1, MAX_N, integer=True)
    seed = number(seed, "seed", 0, MAX_SEED, integer=True)
    scale = number(guidance, "guidance", -math.inf, math.inf) if guidance is not None else 1.0
    steps = number(steps, "steps", 1, pipe.schedule.T, integer=True) if sampler in FEW_STEP \
        else SamplerConfig.steps
    eta = number(eta, "eta", 0, 1) if sampler == "ddim" else ETA
    config = SamplerConfig(sampler=sampler, steps=steps, eta=eta,
                           guidance=None if scale == 1 else scale)  # its own ranges
    config.check(pipe.schedule.T)
    classes, mix = _contexts(pipe, context, weights)
    if config.guidance is not None and classes is None and mix is None:
        raise MinidiffError("guidance needs a class or a mix to steer towards: choose one, or "
                            "set guidance to 1 (off)")
    pipe.contexts(n, classes, mix)  # refuses an unknown class or a bad weight before sampling
    return Request(config, n, classes, mix, seed)


def _contexts(pipe: Pipeline, context: str, weights):
    """(classes, mix) for `Pipeline.contexts`."""
    if context == NO_CLASS:
        return None, None
    names = pipe.classes or [str(i) for i in range(pipe.n_cfeat)]
    if context == EVERY_CLASS:
        return names, None
    if context != MIX:
        return [context], None
    weights = list(weights or [])
    if len(weights) != len(names):
        raise MinidiffError(f"a mix needs {len(names)} weights (one per class), got "
                            f"{len(weights)}")
    return None, [{name: mix_weight(w, f"weight of {name}") for name, w in zip(names, weights)}]
