"""How a training run is configured: `TrainConfig` (a diffusion run, `python -m minidiff train`),
`AutoencoderConfig` (latent diffusion's first stage, `train-autoencoder`), and `train_config` /
`autoencoder_config`, which assemble one from the flags a user typed in one pass: preset, resume,
autoencoder and length rules together.

Each field declares its default, help and rule once with `setting` (`minidiff.utils.rules`):
`TrainConfig(...)` checks them, and the commands make their flags from them (`minidiff.cli.flags`).
The settings both configs share (data, length, engine, run folder) are declared once below, so the
two commands take the same flags for the same things. Why the defaults are what they are:
benchmarks/RESULTS.md ("A recipe for real images", "Latent against pixel diffusion").

The run itself: `minidiff.training.trainer` (`train(config)`), whose step is DDPM Algorithm 1.

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from minidiff.data.limits import IMAGE_SIZE_STEP, MAX_IMAGE_SIZE, check_image_size
from minidiff.reference.noising import KINDS as SCHEDULES
from minidiff.reference.noising import P_MEAN, P_STD
from minidiff.unet import ARCHS, MAX_PIXEL_FEAT, PATCHES, PREDICTIONS
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting
from minidiff.utils.threads import CORES

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("cosine", "constant", "course")
PRECISIONS = ("auto", "fp32", "bf16")
LOSS_WEIGHTS = ("uniform", "min-snr")
T_SAMPLINGS = ("uniform", "lognormal")
LOSSES = ("l1", "mse")  # the autoencoder's reconstruction loss
MAX_IMAGES = 1_000_000  # 3 GB of float32 16x16 RGB: more does not fit a laptop's memory


# The settings both commands share, declared once


def data_setting():
    return setting(None, "'sprites' (built-in, the default), a .npy file in the course's layout, "
                   "or a folder of images (one subfolder per class)")


def labels_setting():
    return setting(None, "one-hot labels .npy for a .npy --data (default: the course's sibling "
                   "name, if it exists)")


def classes_setting():
    return setting(None, "class names 'a,b,c' or a .json file, in label order (default: from the "
                   "data)")


def n_images_setting():
    return setting(None, "use this many images (default: all of them; built-in sprites: 20,000 "
                   "drawn)", low=1, high=MAX_IMAGES)


def image_size_setting(default: int):
    return setting(default, "images are resized to this many pixels square (a multiple of 4)",
                   low=IMAGE_SIZE_STEP, high=MAX_IMAGE_SIZE)


def minutes_setting():
    return setting(None, "wall-clock budget; alone, the step count is fitted to it as the run "
                   "goes (default: no budget)", above=0)


def seed_setting():
    return setting(0, "weights, data order and noise are functions of the seed", low=0,
                   high=2**32 - 1)


def device_setting():
    return setting("auto", "auto, cpu, cuda (or mps)")


def threads_setting():
    return setting(None, "torch CPU threads (default: the cores no other process is running on "
                   "when it starts, saved with the run); resuming with another count is "
                   "allowed but not bit-for-bit", low=1, high=CORES,
                   why=f"this machine has {CORES} cores")


def out_setting(default: str):
    return setting(None, f"run folder (default: {default})")


def resume_setting():
    return setting(False, "continue the run in --out from its checkpoint")


def checkpoint_every_setting():
    return setting(500, "steps between checkpoints (and at the end, and on Ctrl-C); 0: only then",
                   low=0)


def log_every_setting():
    return setting(25, "steps between metrics.jsonl lines", low=1)


def progress_setting():
    return setting(True, "show a progress bar (rank 0 only)")


# `preset="course"`: the lab's run. Adam at 1e-3 set to 1e-3 * (1 - epoch / 32) at each epoch's
# start, batch 100, 32 epochs, no EMA, no clipping, no flips, fp32, its network.
PRESETS = {
    "course": {
        "timesteps": 500, "beta1": 1e-4, "beta2": 0.02, "schedule": "linear", "arch": "course",
        "n_feat": 64, "batch_size": 100, "steps": None, "epochs": 32, "optimizer": "adam",
        "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "lr_schedule": "course",
        "ema_decay": 0.0, "grad_clip": 0.0, "context_drop": 0.1, "hflip": False,
        "precision": "fp32", "channels_last": False, "compile": False, "preset": "course",
        "patch": 2, "pixel_feat": 0, "dropout": 0.0, "prediction": "eps",
        "loss_weight": "uniform", "t_sampling": "uniform",
    },
}

@dataclass
class TrainConfig:
    # data
    data: str | None = data_setting()
    labels: str | None = labels_setting()
    classes: str | None = classes_setting()
    n_images: int | None = n_images_setting()
    image_size: int = image_size_setting(16)
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
    pixel_feat: int = setting(0, "minidiff network on 2x2 patches: channels of a "
                              "full-resolution head (a multiple of 8); 0 none",
                              low=0, high=MAX_PIXEL_FEAT)
    dropout: float = setting(0.0, "minidiff network: dropout in each residual block", low=0,
                             below=1)
    # optimisation
    batch_size: int = setting(128, "global batch: all processes together", low=1, high=65_536)
    steps: int | None = setting(2500, "optimizer steps", low=1, high=100_000_000)
    epochs: float | None = setting(None, "passes over the data, instead of --steps (default: "
                                   "none)", above=0, high=1_000_000)
    minutes: float | None = minutes_setting()
    optimizer: str = setting("adamw", "adamw, or adam (the course's)", choices=OPTIMIZERS)
    lr: float = setting(4e-3, "peak learning rate, reached after the warm-up", above=0, below=1)
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
    t_sampling: str = setting("uniform", "how each image's t is drawn: uniform on 1..T (DDPM, "
                              "the course), or lognormal: log sigma_t ~ N(p_mean, p_std^2), "
                              "sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (EDM, Karras et "
                              "al. 2022)", choices=T_SAMPLINGS)
    p_mean: float = setting(P_MEAN, "mean of log sigma_t under --t-sampling lognormal (EDM's "
                            "-1.2)", low=-10, high=10)
    p_std: float = setting(P_STD, "spread of log sigma_t under --t-sampling lognormal (EDM's "
                           "1.2)", above=0, high=10)
    context_drop: float = setting(0.1, "share of contexts replaced by the null context (the "
                                  "course's)", low=0, below=1)
    hflip: bool = setting(False, "mirror half the images left-right")
    seed: int = seed_setting()
    # engine
    device: str = device_setting()
    precision: str = setting("auto", "auto: bf16 autocast where native (CUDA, AVX512-BF16/AMX "
                             "CPUs)", choices=PRECISIONS)
    channels_last: bool | None = setting(None, "channels-last memory layout (default: on for "
                                         "CUDA, off for CPU)")
    compile: bool = setting(False, "torch.compile the network (slow to start, faster steps)")
    threads: int | None = threads_setting()
    # run folder
    out: str | None = out_setting("runs/<timestamp>")
    resume: bool = resume_setting()
    sample_every: int = setting(500, "steps between preview grids (and at the end); 0: only at "
                                "the end", low=0)
    checkpoint_every: int = checkpoint_every_setting()
    log_every: int = log_every_setting()
    progress: bool = progress_setting()
    preset: str | None = setting(None, "course: the course's recipe, exactly (default: none)",
                                 choices=tuple(PRESETS))

    def __post_init__(self):
        check_train_config(self)

# Fields a resumed run may change: how long, where and how fast; never what is trained.
SESSION_FIELDS = ("steps", "epochs", "minutes", "device", "precision", "channels_last", "compile",
                  "threads", "out", "resume", "sample_every", "checkpoint_every", "log_every",
                  "progress")


def check_train_config(config: TrainConfig) -> None:
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


@dataclass
class AutoencoderConfig:
    # data (the same rules as `train`'s)
    data: str | None = data_setting()
    labels: str | None = labels_setting()  # here only to lay the grid out one column per class
    classes: str | None = classes_setting()
    n_images: int | None = n_images_setting()
    image_size: int = image_size_setting(32)
    holdout: float = setting(0.05, "share of the images kept out of training: the PSNR is "
                             "measured on them (a seeded split)", above=0, below=0.5)
    # network
    factor: int = setting(4, "each side shrinks this many times (a power of 2): 32 px -> 8",
                          low=2, high=16)
    latent_channels: int = setting(4, "channels of the latent (the paper's 4)", low=1, high=64)
    n_feat: int = setting(32, "channels on the 2x2 patches, doubled at each further halving (a "
                          "multiple of 8)", low=8, high=512)
    # loss and optimisation
    loss: str = setting("l1", "reconstruction loss: l1 (it matched or beat mse on held-out "
                        "PSNR) or mse", choices=LOSSES)
    kl_weight: float = setting(1e-6, "weight of the KL term that keeps the latents near N(0, I)",
                               low=0, below=1)
    batch_size: int = setting(32, "images per step", low=1, high=65_536)
    steps: int | None = setting(4000, "optimizer steps", low=1, high=100_000_000)
    minutes: float | None = minutes_setting()
    lr: float = setting(8e-3, "peak learning rate (AdamW), after the warm-up, cosine to 0",
                        above=0, below=1)
    warmup_steps: int = setting(50, "linear warm-up from 0 to --lr", low=0)
    seed: int = seed_setting()
    # engine and run folder
    device: str = device_setting()
    threads: int | None = threads_setting()
    out: str | None = out_setting("runs/autoencoder-<timestamp>")
    resume: bool = resume_setting()
    checkpoint_every: int = checkpoint_every_setting()
    log_every: int = log_every_setting()
    progress: bool = progress_setting()

    def __post_init__(self):
        check_autoencoder_config(self)

    # one learning-rate schedule for both trainers (`learning_rate`)
    lr_schedule = "cosine"

    @property
    def latent_size(self) -> int:
        """The latent's side: image_size / factor."""
        return self.image_size // self.factor


def check_autoencoder_config(config: AutoencoderConfig) -> None:
    """Each field's own rule, then the rules that tie fields together; one line each."""
    check_settings(config)
    check_image_size(config.image_size)
    f = config.factor
    if f & (f - 1):
        raise MinidiffError(f"factor={f} is not a power of 2 (each level halves the image): "
                            "pass 2, 4, 8 or 16")
    if config.image_size % f or config.image_size // f < 4:
        raise MinidiffError(f"image_size={config.image_size} does not shrink {f} times to a "
                            "latent of at least 4 px: pass a smaller --factor or a larger "
                            "--image-size")
    check_image_size(config.latent_size, f"the latent side ({config.image_size} / {f})")
    if config.steps is None and config.minutes is None:
        raise MinidiffError("nothing says how long to train; pass --steps or --minutes")
    if config.n_feat % 8:
        raise MinidiffError(f"n_feat={config.n_feat} must be a multiple of 8 (GroupNorm(8))")


def network_settings(config: AutoencoderConfig | dict, in_channels: int) -> dict:
    """The network's own settings (what `minidiff.autoencoder.Autoencoder` takes)."""
    from minidiff.autoencoder import NETWORK_FIELDS

    values = dataclasses.asdict(config) if not isinstance(config, dict) else config
    return {"in_channels": in_channels, **{name: values[name] for name in NETWORK_FIELDS}}

# Fields a resumed autoencoder run may change.
AUTOENCODER_SESSION = ("steps", "minutes", "device", "threads", "out", "resume",
                       "checkpoint_every", "log_every", "progress")




# Assembling a config from the flags given, in one pass


def train_config(given: dict) -> TrainConfig:
    """The TrainConfig for the settings a user gave (`given`: field -> value, only those typed):
    a resumed run's recipe from its checkpoint, else the preset's or the defaults, with
    `--autoencoder`'s image size and patch, and `--steps`/`--epochs`/`--minutes` replacing each
    other; then every rule checked."""
    given = dict(given)
    if isinstance(given.get("resume"), str):  # --resume RUN
        given["out"] = given.get("out", given["resume"])
        given["resume"] = True
    length = _length(given, ("steps", "epochs"))
    if given.get("resume"):
        saved = _saved_recipe(given, "train")
        if given.pop("preset", saved.get("preset")) != saved.get("preset"):
            raise MinidiffError(f"{given['out']} was not trained with that --preset; drop it to "
                                "resume")
        return _resumed(TrainConfig, saved, given, length if {"steps", "epochs"} & set(given)
                        else {})
    if given.get("autoencoder"):  # latent diffusion: the latents' size, read cell by cell
        from minidiff.autoencoder import autoencoder_image_size

        given.setdefault("image_size", autoencoder_image_size(given["autoencoder"]))
        given.setdefault("patch", 1)
    preset = given.get("preset")
    base = with_preset(preset) if preset else TrainConfig()
    return dataclasses.replace(base, **given, **length)


def autoencoder_config(given: dict) -> AutoencoderConfig:
    """The AutoencoderConfig for the settings a user gave, as `train_config` assembles its own."""
    given = dict(given)
    if isinstance(given.get("resume"), str):
        given["out"] = given.get("out", given["resume"])
        given["resume"] = True
    length = _length(given, ("steps",))
    if not given.get("resume"):
        return dataclasses.replace(AutoencoderConfig(), **given, **length)
    return _resumed(AutoencoderConfig, _saved_recipe(given, "autoencoder"), given, length)


def _resumed(cls, saved: dict, given: dict, length: dict):
    """The saved recipe with the flags given over it. A recipe field given that differs from the
    saved one is refused by the trainer, which checks the checkpoint (`runs.check_same_recipe`)."""
    known = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in saved.items() if k in known}
    if fields.get("threads") is not None and fields["threads"] > CORES:
        fields["threads"] = CORES  # saved on a bigger machine: the most this one has
    return cls(**{**fields, **given, **length, "resume": True})


def _length(given: dict, lengths: tuple) -> dict:
    """--steps or --epochs replaces the other; --minutes alone fits the steps to the budget."""
    if "steps" in given:
        return {"epochs": None} if "epochs" in lengths else {}
    if "epochs" in given:
        return {"steps": None}
    if "minutes" in given:
        return dict.fromkeys(lengths)
    return {}


def _saved_recipe(given: dict, kind: str) -> dict:
    """The recipe a run to resume was saved with (`config[kind]` of its checkpoint)."""
    from minidiff.training.runs import saved_config

    if "out" not in given:
        raise MinidiffError("--resume needs the run to continue: pass --out runs/NAME "
                            "(or --resume runs/NAME)")
    return saved_config(Path(given["out"]), kind)


def learning_rate(config, step: int, total: int | None, steps_per_epoch: int = 1) -> float:
    """The learning rate of `step` (0-based) of `total`, for either config: a linear warm-up, then
    cosine to 0 (or constant, or the course's lr (1 - epoch / epochs)); total None (not yet fitted
    to --minutes) holds the cosine at its start."""
    if config.lr_schedule == "course":  # set at each epoch's start: lr * (1 - epoch / epochs)
        epochs = (total or math.inf) / steps_per_epoch
        return config.lr * (1 - (step // steps_per_epoch) / epochs)
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "constant" or total is None:
        return config.lr * warm
    return config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
