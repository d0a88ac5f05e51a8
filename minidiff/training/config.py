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
CUDA, torch.compile on request, data-parallel training under torchrun
(`minidiff.training.distributed`).
`preset="course"` turns all of that off and reproduces the course's run.

Every draw of step s is a function of (seed, s) (`minidiff.training.batches`), so a run resumed
from its checkpoint ends with exactly the weights of an uninterrupted one.

The default recipe, and why (measured on the 2-core AVX512-BF16 CPU minidiff is developed on;
`benchmarks/train_speed.py` and `benchmarks/train_quality.py` rerun the numbers, and
benchmarks/RESULTS.md, "A recipe for real images", has the ablation on held-out real emoji):
- the "minidiff" network at n_feat 32 predicting v: on held-out emoji after the same 5 CPU-minutes,
  FID 0.69 (floor 0.25) against 1.19 for n_feat 32 predicting eps and 1.91 for n_feat 64 predicting
  eps (the old default; it affords a third of the steps: 64 against 17 MFLOP per image);
  a full-resolution level (`--patch 1`) scored worse at equal time (1.68), flips no better (1.16),
  Min-SNR weighting helps eps (0.72) and adds little to v (0.64, within the seeds' spread);
- bf16 autocast where the hardware has it: 1.7x the images/s of fp32 (752 vs 462 per CPU-second),
  with the same loss curve to 3 digits over 300 steps;
- batch 128 for 2500 steps: 320,000 images, 16 passes over the 20,000 built-in sprites, a fixed
  step count (deterministic) that took 5 minutes on 2 quiet cores of this machine in December;
- AdamW at 4e-3 with 50 warm-up steps and a cosine decay to 0: in 300-step trials the loss ended
  at 0.190, 0.156 and 0.138 for 1e-3, 2e-3 and 4e-3; clipping at norm 1 keeps that rate stable;
- EMA decay 0.995: it averages about the last 200 steps, smooth yet not stale in a short run.

This module imports no torch (`minidiff.utils.rules`, the reference's schedule names and the
networks' torch-free `minidiff.unet_config` only): each field declares its default, help and rule
once with `setting`, `TrainConfig(...)` checks them, and `python -m minidiff train` makes its flags
from them (`minidiff.cli.flags`). The run itself is
`minidiff.training.trainer` (`minidiff.training.train(config)`).

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from minidiff.reference.schedules import KINDS as SCHEDULES
from minidiff.unet_config import ARCHS, IMAGE_SIZE_STEP, PATCHES, PREDICTIONS, check_image_size
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("cosine", "constant", "course")
PRECISIONS = ("auto", "fp32", "bf16")
LOSS_WEIGHTS = ("uniform", "min-snr")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MAX_IMAGES = 1_000_000  # 3 GB of float32 16x16 RGB: more does not fit a laptop's memory
MAX_IMAGE_SIZE = 128  # pixels: a sprite network; 20,000 images of 128 px already take 4 GB

# `preset="course"`: the lab's run. Adam at 1e-3 set to 1e-3 * (1 - epoch / 32) at each epoch's
# start, batch 100, 32 epochs, no EMA, no clipping, no flips, fp32, its network.
PRESETS = {
    "course": {
        "timesteps": 500, "beta1": 1e-4, "beta2": 0.02, "schedule": "linear", "arch": "course",
        "n_feat": 64, "batch_size": 100, "steps": None, "epochs": 32, "optimizer": "adam",
        "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "lr_schedule": "course",
        "ema_decay": 0.0, "grad_clip": 0.0, "context_drop": 0.1, "hflip": False,
        "precision": "fp32", "channels_last": False, "compile": False, "preset": "course",
        "patch": 2, "dropout": 0.0, "prediction": "eps", "loss_weight": "uniform",
    },
}


@dataclass
class TrainConfig:
    # data
    data: str | None = setting(None, "'sprites' (built-in, the default), a .npy file in the "
                               "course's layout, or a folder of images (one subfolder per class)")
    labels: str | None = setting(None, "one-hot labels .npy for a .npy --data (default: the "
                                 "course's sibling name, if it exists)")
    classes: str | None = setting(None, "class names 'a,b,c' or a .json file, in label order "
                                  "(default: from the data)")
    n_images: int | None = setting(None, "use this many images (default: all of them; built-in "
                                   "sprites: 20,000 drawn)", low=1, high=MAX_IMAGES)
    image_size: int = setting(16, "images are resized to this many pixels square (a multiple "
                              "of 4)", low=IMAGE_SIZE_STEP, high=MAX_IMAGE_SIZE)
    autoencoder: str | None = setting(None, "latent diffusion: a train-autoencoder run folder; "
                                      "train on its latents, encoded once (default: pixels)",
                                      metavar="RUN")
    # noise schedule (the course's)
    schedule: str = setting("linear", "the course's linear betas, or cosine (Nichol & Dhariwal "
                            "2021)", choices=SCHEDULES)
    timesteps: int = setting(500, "T, the number of diffusion steps", low=1, high=10_000)
    beta1: float = setting(1e-4, "beta at t = 1 (linear schedule)", above=0, below=1)
    beta2: float = setting(0.02, "beta at t = T (linear schedule)", above=0, below=1)
    # network
    arch: str = setting("minidiff", "minidiff (faster on a CPU) or course (the course's "
                        "ContextUnet)", choices=ARCHS)
    n_feat: int = setting(32, "channels at full resolution (a multiple of 8)", low=8, high=1024)
    patch: int = setting(2, "minidiff network: read patch x patch pixel blocks as channels; 1 "
                         "keeps a full-resolution level (4x the cost per n_feat)",
                         low=min(PATCHES), high=max(PATCHES))
    dropout: float = setting(0.0, "minidiff network: dropout in each residual block", low=0,
                             below=1)
    # optimisation
    batch_size: int = setting(128, "global batch: all processes together", low=1, high=65_536)
    steps: int | None = setting(2500, "optimizer steps", low=1, high=100_000_000)
    epochs: float | None = setting(None, "passes over the data, instead of --steps (default: "
                                   "none)", above=0, high=1_000_000)
    minutes: float | None = setting(None, "wall-clock budget; alone, the step count is fitted "
                                    "to it (default: no budget)", above=0)
    optimizer: str = setting("adamw", "adamw, or adam (the course's)", choices=OPTIMIZERS)
    lr: float = setting(4e-3, "peak learning rate, reached after the warm-up (the module "
                        "docstring of minidiff/training/config.py has the trials)", above=0, below=1)
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", low=0)
    warmup_steps: int = setting(50, "linear warm-up from 0 to --lr", low=0)
    lr_schedule: str = setting("cosine", "cosine to 0, constant, or course: lr (1 - epoch / "
                               "epochs)", choices=LR_SCHEDULES)
    ema_decay: float = setting(0.995, "EMA of the weights; 0 turns it off", low=0, below=1)
    grad_clip: float = setting(1.0, "clip the gradient's global norm; 0 turns it off", low=0)
    prediction: str = setting("v", "the network's target: v = sqrt(alpha_bar) eps - "
                              "sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022), or eps (the course's)",
                              choices=PREDICTIONS)
    loss_weight: str = setting("uniform", "uniform: the course's plain MSE on eps; min-snr: "
                               "weight step t by min(SNR_t, gamma) / SNR_t (Hang et al. 2023)",
                               choices=LOSS_WEIGHTS)
    snr_gamma: float = setting(5.0, "gamma of --loss-weight min-snr (the paper's 5)", above=0)
    context_drop: float = setting(0.1, "share of contexts replaced by the null context (the "
                                  "course's)", low=0, below=1)
    hflip: bool = setting(False, "mirror half the images left-right")
    seed: int = setting(0, "weights, data order and noise are functions of the seed",
                        low=0, high=2**32 - 1)
    # engine
    device: str = setting("auto", "auto, cpu, cuda (or mps)")
    precision: str = setting("auto", "auto: bf16 autocast where native (CUDA, AVX512-BF16/AMX "
                             "CPUs)", choices=PRECISIONS)
    channels_last: bool | None = setting(None, "channels-last memory layout (default: on for "
                                         "CUDA, off for CPU)")
    compile: bool = setting(False, "torch.compile the network (slow to start, faster steps)")
    # Measured (benchmarks/RESULTS.md, Threads): 80 steps took 41 s on 2 threads and 60 s on 1
    # on a quiet 2-core machine, but 99 s against 54 s with one other busy process. The default
    # stays torch's (all cores) because a run's thread count is part of its bit-exact resume.
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice, all cores); "
                                  "on a shared machine --threads 1 holds up far better; resuming "
                                  "with another count is allowed but not bit-for-bit", low=1,
                                  high=CORES, why=f"this machine has {CORES} cores")
    # run folder
    out: str | None = setting(None, "run folder (default: runs/<timestamp>)")
    resume: bool = setting(False, "continue the run in --out from its checkpoint")
    sample_every: int = setting(500, "steps between preview grids (and at the end); 0: only at "
                                "the end", low=0)
    checkpoint_every: int = setting(500, "steps between checkpoints (and at the end, and on "
                                    "Ctrl-C); 0: only then", low=0)
    log_every: int = setting(25, "steps between metrics.jsonl lines", low=1)
    progress: bool = setting(True, "show a progress bar (rank 0 only)")
    preset: str | None = setting(None, "course: the course's recipe, exactly (default: none)",
                                 choices=tuple(PRESETS))

    def __post_init__(self):
        check_config(self)


# Fields a resumed run may change: how long, where and how fast; never what is trained.
SESSION_FIELDS = ("steps", "epochs", "minutes", "device", "precision", "channels_last", "compile",
                  "threads", "out", "resume", "sample_every", "checkpoint_every", "log_every",
                  "progress")


def check_config(config: TrainConfig) -> None:
    """Raise a one-line MinidiffError for any value that cannot train: each field's own rule
    (declared above), then the rules that tie fields together."""
    check_settings(config)
    check_image_size(config.image_size)
    if config.steps is not None and config.epochs is not None:
        raise MinidiffError("both steps and epochs are set; pass --steps or --epochs, not both")
    if config.steps is None and config.epochs is None and config.minutes is None:
        raise MinidiffError("nothing says how long to train; pass --steps, --epochs or --minutes")
    if config.schedule == "linear" and config.beta1 > config.beta2:
        raise MinidiffError(f"beta1={config.beta1} is larger than beta2={config.beta2}; the noise "
                            "must grow with t, so swap them")


def with_preset(name: str, **overrides) -> TrainConfig:
    """TrainConfig with preset `name` applied, then `overrides`."""
    return TrainConfig(**{**PRESETS.get(name, {"preset": name}), **overrides})


BUDGET_SHARE = 0.95  # --minutes fits the steps to this share of it: saving and measuring take time


def fitted_total(step: int, timed: int, seconds_timed: float, seconds_so_far: float,
                 minutes: float) -> int:
    """The step count that fills BUDGET_SHARE of `minutes`, at the rate of `timed` steps in
    `seconds_timed` (steps after the first: it is slower, torch's warm-up), `seconds_so_far` of
    it spent at `step`. Both trainers fit --minutes with it."""
    remaining = minutes * 60 * BUDGET_SHARE - seconds_so_far
    return step + max(0, int(remaining * timed / seconds_timed))


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
    if fields.get("threads") is not None and fields["threads"] > CORES:
        fields["threads"] = CORES  # saved on a bigger machine: the most this one has
    return TrainConfig(**{**fields, **overrides, "resume": True})
