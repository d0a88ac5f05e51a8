"""The sampling loop: from x_T ~ N(0, I) to images, with the steps of `minidiff/samplers.py`.

The loops (`sample_loop`, configured by `SamplerConfig`) are the course's: DDPM walks t = T..1
(DDPM Algorithm 2), its "no noise" variant sets z = 0 at every step to show the collapse to
average blobs, and DDIM jumps through `ddim_timesteps` (Song et al. 2021, eq. 12). DPM-Solver++(2M)
(Lu et al. 2022b) walks `dpm_solver_timesteps`, carrying the previous update's x0_theta.
Classifier-free guidance (Ho & Salimans 2022, eq. 6) runs both halves in one batched forward
pass, at every timestep or only inside `guidance_interval` (Kynkaanniemi et al. 2024).

Noise follows the convention of `minidiff.reference.philox`: x_T is step k = 0's noise and the
k-th update draws step k's, each indexed by element, so sample i's images do not depend on the
batch size and the fused kernels (`fused=True`) draw the very same numbers in-kernel.

Tutorials: tutorials/02_sampling.py (DDPM), tutorials/06_fast_sampling.py (DDIM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minidiff.philox import randn_like_step
from minidiff.reference.samplers import ETA_RANGE
from minidiff.samplers import (
    DPM_SPACINGS,
    SPACINGS,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    dpm_solver_step,
    dpm_solver_timesteps,
)
from minidiff.schedules import Schedule
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting

__all__ = ["ETA", "GUIDANCE", "SAMPLERS", "SamplerConfig", "guided_eps", "load_kernels",
           "sample_loop"]

SAMPLERS = ("ddim", "ddpm", "ddpm-no-noise", "dpm++2m")
FEW_STEP = ("ddim", "dpm++2m")  # the samplers that take `steps`


# DDIM's eta by default (`pipe.sample`, the CLI, the training previews): 1, chosen by looking.
# The feature-classifier FID disagrees: for DDIM-25 on the default run (1,500 steps;
# benchmarks/sample_eta.py, 500 samples, seeds 0 and 1) eta 0 scored 0.75 and 1.01 against eta 1's
# 1.21 and 1.74 (noise floor 0.49, 0.67). But side by side (docs/ddim_eta0.png, docs/ddim_eta1.png)
# eta 0's sprites are speckled with stray colours that eta 1's fresh noise washes out, and the
# learner has just seen eta 1 in the training preview. This small classifier's features do not see
# speckle (issue 11 is about an instrument that does); until one does, the eye decides.
ETA = 1.0
GUIDANCE = (0.0, 20.0)  # the guidance scales allowed: past ~10 the images burn out; 1e30 gave
# all-black sprites


@dataclass
class SamplerConfig:
    """How to walk from noise to images; `python -m minidiff sample` maps its flags onto this.

    Each field declares its rule once (`minidiff.utils.rules.setting`): `SamplerConfig(...)`
    refuses a value that breaks it in one line, and the sample/eval flags parse with the same rule
    (`minidiff.cli.sample`). `check(T)` adds the rules that need the schedule's T.
    """

    sampler: str = setting("ddim", "how to walk from noise to images", choices=SAMPLERS)
    # "ddpm" takes all T steps, "ddpm-no-noise" is the course's z = 0 demo, "dpm++2m" is
    # DPM-Solver++(2M) (Lu et al. 2022b: second order, deterministic)
    steps: int = setting(25, "DDIM / dpm++2m updates (the course's demo: 25); DDPM always takes "
                         "all T", low=1)  # and <= T: `check`
    eta: float = setting(ETA, "DDIM noise: 0 deterministic (the course), 1 DDPM-like (DDIM eq. "
                         "16)", low=ETA_RANGE[0], high=ETA_RANGE[1])  # the steps' own range
    spacing: str | None = setting(None, "timesteps: course = range(T, 0, -(T // steps)), "
                                  "uniform, or for dpm++2m also trailing (T..0 evenly); None: "
                                  "course for DDIM, trailing for dpm++2m", choices=DPM_SPACINGS)
    guidance: float | None = setting(None, "classifier-free scale s in eps_u + s (eps_c - eps_u); "
                                     "None: off", low=GUIDANCE[0], high=GUIDANCE[1],
                                     why="past about 10 the images burn out")
    guidance_interval: tuple[int, int] | None = None  # (lo, hi) in timesteps t: guide only where
    # lo <= t <= hi, plain conditional eps elsewhere (Kynkaanniemi et al. 2024); None: every t
    clip_x0: bool = setting(False, "DDIM: clamp the predicted x0 to [-1, 1] (the course does not)")
    fused: bool = setting(False, "run each update as one Triton kernel (minidiff.kernels)")
    save_every: int | None = setting(None, "frames: DDPM keeps t % 20 == 0 (course), DDIM every "
                                     "step", low=1)

    def __post_init__(self):
        check_settings(self)

    def check(self, T: int) -> None:
        """Raise a one-line MinidiffError for a setting that cannot run on a T-step schedule:
        each field's own rule (declared above, checked again should a field have been set since),
        then the rules that need T or tie fields together."""
        check_settings(self)
        if self.sampler in FEW_STEP and self.steps > T:
            raise MinidiffError(f"steps={self.steps} is too large: it must be <= {T}, the run's T")
        if self.sampler != "dpm++2m" and self.spacing is not None and self.spacing not in SPACINGS:
            raise MinidiffError(f"spacing {self.spacing!r} is not one of {', '.join(SPACINGS)} "
                                f"({self.spacing} is for dpm++2m)")
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            if self.guidance is None:
                raise MinidiffError("a guidance interval needs a guidance scale (--guidance S)")
            if not 0 <= lo <= hi <= T:
                raise MinidiffError(f"guidance_interval {lo},{hi} must satisfy "
                                    f"0 <= lo <= hi <= {T}")

    def timesteps(self, T: int) -> list[int]:
        """The timesteps visited, from T down to 0; each consecutive pair (t, s) is one update."""
        if self.sampler == "ddim":
            return [int(t) for t in ddim_timesteps(T, self.steps, self.spacing or "course")]
        if self.sampler == "dpm++2m":
            return [int(t) for t in dpm_solver_timesteps(T, self.steps, self.spacing or "trailing")]
        return list(range(T, -1, -1))

    def guidance_at(self, t: int) -> float | None:
        """The guidance scale for the update from timestep t: None (no guidance: the plain,
        conditional eps_theta) outside the interval, the scale s inside it."""
        if self.guidance_interval is None:
            return self.guidance
        lo, hi = self.guidance_interval
        return self.guidance if lo <= t <= hi else None

    def keeps_frame(self, t: int, k: int, T: int, n_updates: int) -> bool:
        """Is x after update k (from timestep t) an animation frame? The course keeps
        `i % 20 == 0 or i == T or i < 8` for DDPM (32 frames of 500) and every DDIM step."""
        if self.sampler in FEW_STEP:
            every = self.save_every or 1
            return k % every == 0 or k == n_updates
        return t % (self.save_every or 20) == 0 or t == T or t < 8


def guided_eps(model, x_t, t_over_T, c, guidance):
    """eps_theta(x_t, t / T, c), or with guidance eps_u + s (eps_c - eps_u) (Ho & Salimans 2022,
    eq. 6 with s = 1 + w) from ONE forward pass over the doubled batch [c; null context]."""
    if guidance is None:
        return model(x_t, t_over_T, c)
    eps_c, eps_u = model(torch.cat((x_t, x_t)), torch.cat((t_over_T, t_over_T)),
                         torch.cat((c, torch.zeros_like(c)))).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@torch.inference_mode()
def sample_loop(model, schedule: Schedule, shape, c=None, config: SamplerConfig | None = None,
                seed: int = 0, keep_frames: bool = False):
    """Run the reverse process from x_T ~ N(0, I) and return (x0, frames, frame_timesteps).

    `shape` is (B, C, H, W); `c` (B, n_cfeat) or None (the null context for a conditional model).
    `frames` holds x after the updates `SamplerConfig.keeps_frame` picks (on x's device), and
    `frame_timesteps` the timestep each frame sits at. Noise: see the module docstring.
    """
    config = config or SamplerConfig()
    config.check(schedule.T)
    if config.guidance is not None and c is None:
        raise MinidiffError("guidance needs a context (a class or a mix) to steer towards")
    T, device, batch = schedule.T, schedule.device, shape[0]
    visited = config.timesteps(T)
    update = _fused_update(config) if config.fused else _torch_update(config)
    x = randn_like_step(torch.empty(shape, device=device), seed, 0)  # x_T: step k = 0's noise
    # Every timestep, made on the device once: no host-to-device copy inside the loop. The
    # kernels take these tensors without a sync; the torch steps take Python ints, whose range
    # check runs on the host (on a GPU they then copy t once per step).
    t_device = torch.tensor(visited, dtype=torch.int64, device=device)
    t_over_T = t_device.float() / T
    frames, frame_timesteps = [], []
    for k in range(1, len(visited)):
        t, s = visited[k - 1], visited[k]
        eps_theta = guided_eps(model, x, t_over_T[k - 1].expand(batch), c, config.guidance_at(t))
        if config.fused:
            x = update(x, eps_theta.float(), t_device[k - 1].expand(batch),
                       t_device[k].expand(batch), schedule, seed, k)
        else:
            x = update(x, eps_theta.float(), t, s, schedule, seed, k)
        if keep_frames and config.keeps_frame(t, k, T, len(visited) - 1):
            frames.append(x)  # each update returns a new tensor: no copy needed
            frame_timesteps.append(s)
    return x, frames, frame_timesteps


def _torch_update(config: SamplerConfig):
    """x_t -> x_s with the torch steps above, noise from `minidiff.philox` for step k."""
    variance = "none" if config.sampler == "ddpm-no-noise" else "beta"

    def ddpm(x, eps_theta, t, s, schedule, seed, k):
        z = randn_like_step(x, seed, k) if variance != "none" and t > 1 else None
        return ddpm_step(x, eps_theta, t, schedule, z, variance)

    def ddim(x, eps_theta, t, s, schedule, seed, k):
        z = randn_like_step(x, seed, k) if config.eta > 0 else None
        return ddim_step(x, eps_theta, t, s, schedule, config.eta, z, config.clip_x0)

    if config.sampler == "dpm++2m":
        return _multistep(dpm_solver_step)
    return ddim if config.sampler == "ddim" else ddpm


def _multistep(dpm_solver_step):
    """x_t -> x_s with DPM-Solver++(2M), which keeps one update's state for the next: the
    previous x0_theta and the timestep it was predicted at (Algorithm 2's buffer Q). The first
    update has none and is first order. No noise: the solver is deterministic."""
    previous = (None, None)  # (x0_theta_prev, t_prev)

    def dpm(x, eps_theta, t, s, schedule, seed, k):
        nonlocal previous
        x_s, x0_theta = dpm_solver_step(x, eps_theta, t, s, schedule, *previous)
        previous = (x0_theta, t)
        return x_s

    return dpm


def _fused_update(config: SamplerConfig):
    """x_t -> x_s with `minidiff.kernels`: one kernel per update, the same noise drawn in-kernel."""
    kernels = load_kernels()
    variance = "none" if config.sampler == "ddpm-no-noise" else "beta"

    def ddpm(x, eps_theta, t, s, schedule, seed, k):
        noise_seed = None if variance == "none" else seed
        return kernels.ddpm_step(x, eps_theta, t, schedule, variance=variance, seed=noise_seed, k=k)

    def ddim(x, eps_theta, t, s, schedule, seed, k):
        noise_seed = seed if config.eta > 0 else None
        return kernels.ddim_step(x, eps_theta, t, s, schedule, eta=config.eta,
                                 clip_x0=config.clip_x0, seed=noise_seed, k=k)

    if config.sampler == "dpm++2m":
        return _multistep(kernels.dpm_solver_step)
    return ddim if config.sampler == "ddim" else ddpm


def load_kernels():
    """`minidiff.kernels`, loaded (`kernels.load()`: the GPU or Triton's interpreter chosen), or a
    one-line MinidiffError when Triton is not installed."""
    from minidiff import kernels  # imports no Triton

    try:
        return kernels.load()
    except ImportError as error:
        if "triton" not in str(error).lower():
            raise
        raise MinidiffError("--fused needs Triton, which is not installed here (pip install "
                            "triton; Linux only); sample without --fused") from None
