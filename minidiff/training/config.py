"""Training a ContextUnet: the course's algorithm, with a modern recipe around it.

Each step (DDPM Algorithm 1, as the course runs it):
  1. x0 ~ data, with its context c (one-hot class), zeroed for 10% of the batch: the "null"
     context that classifier-free guidance samples with
  2. t ~ Uniform{1, ..., T}
  3. eps ~ N(0, I)
  4. x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps      (DDPM eq. 4, `noising.q_sample`;
     not the course's form, which drops the square root on the noise coefficient)
  5. a gradient step on || eps - eps_theta(x_t, t / T, c) ||^2

Around it (`TrainConfig` lists every knob): AdamW with a linear warm-up then cosine decay,
gradient clipping, an EMA of the weights (`minidiff.ema`), bf16 autocast and channels_last on
CUDA, torch.compile on request, data-parallel training under torchrun (`minidiff.training.distributed`).
`preset="course"` turns all of that off and reproduces the course's run.

Every draw of step s is a function of (seed, s) (`minidiff.training.batches`), so a run resumed from its
checkpoint ends with exactly the weights of an uninterrupted one.

The default recipe, and why (measured on the 2-core AVX512-BF16 CPU minidiff is developed on;
`benchmarks/train_speed.py` and `benchmarks/train_quality.py` rerun the numbers):
- the "minidiff" network at n_feat 64: 756 training images per CPU-second in bf16, against 90
  for the course's network in fp32;
- bf16 autocast where the hardware has it: 1.7x the images/s of fp32 (752 vs 462 per CPU-second),
  with the same loss curve to 3 digits over 300 steps;
- batch 128 for 1500 steps: 192,000 images, 9.6 passes over the 20,000 built-in sprites, a fixed
  step count (deterministic) that fits in 5 minutes even on one quiet core;
- AdamW at 4e-3 with 50 warm-up steps and a cosine decay to 0: in 300-step trials the loss ended
  at 0.190, 0.156 and 0.138 for 1e-3, 2e-3 and 4e-3; clipping at norm 1 keeps that rate stable;
- EMA decay 0.995: it averages about the last 200 steps, smooth yet not stale in a short run.

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minidiff.utils.errors import MinidiffError

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("cosine", "constant", "course")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # None or "sprites": built-in sprites; else a .npy file or a folder
    labels: str | None = None  # one-hot labels .npy for a .npy --data (the course's layout)
    classes: str | None = None  # class names "a,b,c" or a .json file, in label order
    n_images: int | None = None  # use n images (built-in sprites: how many to draw, 20,000)
    image_size: int = 16  # images are resized to image_size x image_size
    # noise schedule (the course's)
    schedule: str = "linear"  # "linear" (the course's) or "cosine" (Nichol & Dhariwal 2021)
    timesteps: int = 500  # T
    beta1: float = 1e-4  # beta at t = 1 (linear schedule)
    beta2: float = 0.02  # beta at t = T (linear schedule)
    # network
    arch: str = "minidiff"  # "minidiff" (faster on CPU) or "course" (the course's ContextUnet)
    n_feat: int = 64  # channels at full resolution
    # optimisation
    batch_size: int = 128  # global batch: all processes together
    steps: int | None = 1500  # optimizer steps; None: from epochs, or fitted to minutes
    epochs: float | None = None  # passes over the data, instead of steps
    minutes: float | None = None  # wall-clock budget; alone, it fits the step count to it
    optimizer: str = "adamw"  # "adamw" or "adam" (the course's)
    lr: float = 4e-3  # peak learning rate (see the module doc for the trials)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 50  # linear warm-up from 0 to lr
    lr_schedule: str = "cosine"  # "cosine" to 0, "constant", or "course": lr (1 - epoch/epochs)
    ema_decay: float = 0.995  # EMA of the weights; 0 turns it off
    grad_clip: float = 1.0  # clip the gradient's global norm; 0 turns it off
    context_drop: float = 0.1  # share of contexts replaced by the null context (the course's)
    hflip: bool = False  # mirror half the images left-right
    seed: int = 0  # weights, data order and noise are functions of the seed
    # engine
    device: str = "auto"  # "auto", "cpu", "cuda" (or "mps")
    precision: str = "auto"  # "auto": bf16 autocast where native (CUDA, AVX512-BF16/AMX CPUs)
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    compile: bool = False  # torch.compile the network (slow to start, faster steps)
    threads: int | None = None  # torch CPU threads; None: torch's default
    # run folder
    out: str | None = None  # runs/NAME; None: runs/<timestamp>
    resume: bool = False  # continue the run in `out` from its checkpoint
    sample_every: int = 500  # steps between preview grids (and at the end); 0: only at the end
    checkpoint_every: int = 500  # steps between checkpoints (and at the end, and on Ctrl-C)
    log_every: int = 25  # steps between metrics.jsonl lines
    progress: bool = True  # show a progress bar (rank 0 only)
    preset: str | None = None  # the preset applied, recorded for reference


# `preset="course"`: the lab's run. Adam at 1e-3 set to 1e-3 * (1 - epoch / 32) at each epoch's
# start, batch 100, 32 epochs, no EMA, no clipping, no flips, fp32, its network.
PRESETS = {
    "course": {
        "timesteps": 500, "beta1": 1e-4, "beta2": 0.02, "schedule": "linear", "arch": "course",
        "n_feat": 64, "batch_size": 100, "steps": None, "epochs": 32, "optimizer": "adam",
        "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "lr_schedule": "course",
        "ema_decay": 0.0, "grad_clip": 0.0, "context_drop": 0.1, "hflip": False,
        "precision": "fp32", "channels_last": False, "compile": False, "preset": "course",
    },
}

# Fields a resumed run may change: how long, where and how fast; never what is trained.
SESSION_FIELDS = ("steps", "epochs", "minutes", "device", "precision", "channels_last", "compile",
                  "threads", "out", "resume", "sample_every", "checkpoint_every", "log_every",
                  "progress")


def with_preset(name: str, **overrides) -> TrainConfig:
    """TrainConfig with preset `name` applied, then `overrides`."""
    if name not in PRESETS:
        raise MinidiffError(f"preset {name!r} is not one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def check_config(config: TrainConfig) -> None:
    """Raise a one-line MinidiffError for any value that cannot train."""
    _choice("schedule", config.schedule, ("linear", "cosine"))
    _choice("arch", config.arch, ("minidiff", "course"))
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    _choice("precision", config.precision, PRECISIONS)
    for name in ("timesteps", "batch_size", "n_feat", "image_size", "log_every"):
        _at_least(name, getattr(config, name), 1)
    for name in ("steps", "n_images", "threads"):
        if getattr(config, name) is not None:
            _at_least(name, getattr(config, name), 1)
    for name in ("warmup_steps", "sample_every", "checkpoint_every", "seed"):
        _at_least(name, getattr(config, name), 0)
    if config.steps is not None and config.epochs is not None:
        raise MinidiffError("both steps and epochs are set; pass --steps or --epochs, not both")
    if config.epochs is not None and not (math.isfinite(config.epochs) and config.epochs > 0):
        raise MinidiffError(f"--epochs {config.epochs} must be a positive number")
    if config.minutes is not None and not (math.isfinite(config.minutes) and config.minutes > 0):
        raise MinidiffError(f"--minutes {config.minutes} must be a positive number")
    if config.steps is None and config.epochs is None and config.minutes is None:
        raise MinidiffError("nothing says how long to train; pass --steps, --epochs or --minutes")
    for name, low, high in (("lr", 0, 1), ("beta1", 0, 1), ("beta2", 0, 1),
                            ("ema_decay", 0, 1), ("context_drop", 0, 1)):
        value = getattr(config, name)
        if not (math.isfinite(value) and low <= value < high) or (name == "lr" and value == 0):
            raise MinidiffError(f"{name}={value} is outside the valid range "
                                f"{'(' if name == 'lr' else '['}{low}, {high})")
    if config.schedule == "linear" and config.beta1 > config.beta2:
        raise MinidiffError(f"beta1={config.beta1} is larger than beta2={config.beta2}; the noise "
                            "must grow with t, so swap them")
    for name in ("weight_decay", "grad_clip"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise MinidiffError(f"{name}={value} must be a number >= 0 (0 turns it off)")


def _choice(name, value, options) -> None:
    if value not in options:
        raise MinidiffError(f"--{name.replace('_', '-')} {value!r} is not one of "
                            f"{', '.join(options)}")


def _at_least(name, value, low) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MinidiffError(f"--{name.replace('_', '-')} {value!r} must be an integer >= {low}")


def learning_rate(config: TrainConfig, step: int, total: int | None, steps_per_epoch: int):
    """The learning rate of `step` (0-based) of `total`; total None (still fitting the step count
    to --minutes) holds the cosine at its start."""
    if config.lr_schedule == "course":  # set at each epoch's start: lr * (1 - epoch / epochs)
        epochs = (total or math.inf) / steps_per_epoch
        return config.lr * (1 - (step // steps_per_epoch) / epochs)
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "constant" or total is None:
        return config.lr * warm
    return config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


def resumed_config(saved: dict, **overrides) -> TrainConfig:
    """The TrainConfig a run was saved with (`config["train"]` of its checkpoint), with
    `overrides` (session fields, or recipe fields that must match) applied."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = {k: v for k, v in saved.items() if k in known}
    return TrainConfig(**{**fields, **overrides, "resume": True})


def train(config: TrainConfig, on_step=None):
    """Train as `config` says; returns the `Trainer` (its `model`, `ema`, `step`, `out`).

    `on_step(step)` is called after every step (a test's hook: raising KeyboardInterrupt there
    stops the run as Ctrl-C would, with a checkpoint).
    """
    from minidiff.training.trainer import Trainer  # torch and the network load here, not on `import minidiff.training.config`

    trainer = Trainer(config)
    trainer.run(on_step)
    return trainer
