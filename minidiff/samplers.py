"""The reverse process in torch: DDPM and DDIM steps (`minidiff.reference.samplers`'s twins,
batched, any device) and the sampling loop that runs them from x_T ~ N(0, I) to images.

Notation: the glossary in `minidiff.reference` (reference/__init__.py): `x_t`, `eps_theta` (the
noise prediction every step takes), `x0_theta` (the predicted x0), `z` fresh noise (None: no
noise, under `check_z`'s rule), `t` and `s` per-sample integer timesteps, `sigma` the added
noise's standard deviation. Step arithmetic runs in float32 or wider (`noising.compute_dtype`).

The loop (`sample_loop`, configured by `SamplerConfig`) is the course's: DDPM walks t = T..1
(DDPM Algorithm 2), its "no noise" variant sets z = 0 at every step to show the collapse to
average blobs, and DDIM jumps through `ddim_timesteps` (Song et al. 2021, eq. 12);
DPM-Solver++(2M) (`minidiff.dpm_solver`) walks `dpm_solver_timesteps`. The network returns what
it was trained to predict (`model.prediction`: eps, or v), and the loop turns v into eps_theta
with `noising.eps_from_v` before any step sees it. Classifier-free guidance (Ho & Salimans 2022,
eq. 6) runs both halves in one batched forward pass, at every timestep or only inside
`guidance_interval` (Kynkaanniemi et al. 2024).

Noise follows the convention of `minidiff.reference.philox`: x_T is step k = 0's noise and the
k-th update draws step k's, each indexed by element, so sample i's images do not depend on the
batch size and the fused kernels (`fused=True`) draw the very same numbers in-kernel.

Tutorials: tutorials/02_sampling.py (DDPM), tutorials/06_fast_sampling.py (DDIM, DPM-Solver).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minidiff.dpm_solver import (
    DPM_SPACINGS,
    dpm_solver_sde_step,
    dpm_solver_step,
    dpm_solver_timesteps,
)
from minidiff.noising import (
    Schedule,
    check_same_shape,
    check_t,
    compute_dtype,
    eps_from_v,
    extract,
    predict_x0,
)
from minidiff.philox import randn_like_step
from minidiff.reference import samplers as reference
from minidiff.reference.samplers import (
    ETA_RANGE,
    SPACINGS,
    VARIANCES,
    check_eta,
    check_variance,
    ddim_timesteps,
)
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import check_settings, setting

__all__ = [
    "ETA", "GUIDANCE", "SAMPLERS", "SPACINGS", "VARIANCES", "SamplerConfig", "Update",
    "check_eta", "check_s_before_t", "check_variance", "check_z", "ddim_sigma", "ddim_step",
    "ddim_timesteps", "ddpm_coefficients", "ddpm_step", "guided_eps", "load_kernels",
    "sample_loop",
]


# One reverse step (DDPM Algorithm 2, DDIM eq. 12): the reference's twins

def ddpm_coefficients(t: torch.Tensor, schedule: Schedule, variance: str = "beta"):
    """s1 = 1/sqrt(alpha_t), s2 = beta_t/sqrt(1 - alpha_bar_t), s3 = sigma_t for each t (float64).

    sigma_t^2 = beta_t ("beta"), beta~_t ("beta_tilde") or 0 ("none"); s3 = 0 where t = 1.
    """
    check_variance(variance)
    s1 = schedule.alpha[t].rsqrt()
    s2 = schedule.beta[t] / (1 - schedule.alpha_bar[t]).sqrt()
    sigma2 = {"beta": schedule.beta, "beta_tilde": schedule.beta_tilde}.get(variance)
    s3 = torch.zeros_like(s1) if sigma2 is None else sigma2[t].sqrt()
    s3 = torch.where(t == 1, torch.zeros_like(s3), s3)  # Algorithm 2, line 3: no noise at the end
    return s1, s2, s3


def check_z(z, sigma: torch.Tensor, caller: str) -> None:
    """The reference's `check_z` rule: z=None (no fresh noise) only where sigma = 0 for every
    sample. sigma is read on the host only when z is None."""
    if z is None:
        reference.check_z(None, sigma.detach().cpu().numpy(), caller)


def check_s_before_t(t: torch.Tensor, s: torch.Tensor) -> None:
    """The reference's `check_s_before_t` on tensors (read on the host)."""
    reference.check_s_before_t(t.detach().cpu().numpy(), s.detach().cpu().numpy())


def ddpm_step(x_t, eps_theta, t, schedule: Schedule, z=None, variance="beta") -> torch.Tensor:
    """x_{t-1} = s1 * (x_t - s2 * eps_theta) + s3 * z (DDPM Algorithm 2, line 4; the course's
    `denoise_add_noise`). `z` may be None where s3 = 0 for every sample (`check_z`)."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    t = check_t(t, schedule.T, x_t)
    dtype = compute_dtype(x_t)
    s1, s2, s3 = (c.reshape((-1,) + (1,) * (x_t.ndim - 1))
                  for c in ddpm_coefficients(t, schedule, variance))
    check_z(z, s3, "ddpm_step")
    x_prev = s1.to(dtype) * (x_t.to(dtype) - s2.to(dtype) * eps_theta.to(dtype))  # DDPM eq. (11)
    return x_prev if z is None else x_prev + s3.to(dtype) * z.to(dtype)


def ddim_sigma(t, s, schedule: Schedule, eta=0.0) -> torch.Tensor:
    """sigma of a DDIM step from t to s for each sample (float64): DDIM eq. (16) times eta."""
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    return eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)).sqrt()


def ddim_step(
    x_t, eps_theta, t, s, schedule: Schedule, eta=0.0, z=None, clip_x0=False
) -> torch.Tensor:
    """Jump from t to an earlier s (DDIM eq. 12, sigma from eq. 16); see the reference's
    `ddim_step` for the three lines of math, which this mirrors term by term."""
    check_same_shape(x_t=x_t, eps_theta=eps_theta, z=z)
    check_eta(eta)
    t = check_t(t, schedule.T, x_t)
    s = check_t(s, schedule.T, x_t, name="s", low=0)
    check_s_before_t(t, s)
    # float64: coefficients first, cast once
    sigma = ddim_sigma(t, s, schedule, eta).reshape((-1,) + (1,) * (x_t.ndim - 1))
    check_z(z, sigma, "ddim_step")
    dtype = compute_dtype(x_t)
    alpha_bar_t = extract(schedule.alpha_bar, t, x_t)
    alpha_bar_s = extract(schedule.alpha_bar, s, x_t)
    direction = (1 - alpha_bar_s - sigma**2).clamp_min(0).sqrt()  # eq. (12) "direction to x_t"
    x0_theta = predict_x0(x_t, eps_theta, alpha_bar_t)  # eq. (12): the "predicted x0"
    if clip_x0:
        x0_theta = x0_theta.clamp(-1, 1)
    x_s = alpha_bar_s.sqrt().to(dtype) * x0_theta + direction.to(dtype) * eps_theta.to(dtype)
    return x_s if z is None else x_s + sigma.to(dtype) * z.to(dtype)


# The sampling loop

SAMPLERS = ("ddim", "ddpm", "ddpm-no-noise", "dpm++2m", "dpm++2m-sde")
DPM = ("dpm++2m", "dpm++2m-sde")  # DPM-Solver++(2M), its ODE and its SDE
FEW_STEP = ("ddim", *DPM)  # the samplers that take `steps`
# The default sampler of `sample`, `eval`, `pipe.sample` and the training previews, at 25 steps:
# SDE-DPM-Solver++(2M), chosen by FID and patch SWD together at guidance 1 and 2 on four data
# sets (benchmarks/RESULTS.md, "The default sampler"): DDIM-25 at eta 1's FID and accuracy, with
# 23-41% less patch SWD (crisper texture).
SAMPLER = "dpm++2m-sde"
# DDIM's default eta (`--sampler ddim`): 1, chosen by eye over the feature FID, which preferred
# eta 0's speckled sprites (benchmarks/RESULTS.md, Sampling).
ETA = 1.0
GUIDANCE = (0.0, 20.0)  # the guidance scales allowed: past ~10 the images burn out


@dataclass
class SamplerConfig:
    """How to walk from noise to images; `python -m minidiff sample` maps its flags onto this.

    Each field declares its rule once (`minidiff.utils.rules.setting`): `SamplerConfig(...)`
    refuses a value that breaks it in one line, and the sample/eval flags parse with the same rule
    (`minidiff.cli.sample`). `check(T)` adds the rules that need the schedule's T.
    """

    sampler: str = setting(SAMPLER, "how to walk from noise to images", choices=SAMPLERS)
    # "ddpm" takes all T steps, "ddpm-no-noise" is the course's z = 0 demo, "dpm++2m" is
    # DPM-Solver++(2M) (Lu et al. 2022b: second order, deterministic), "dpm++2m-sde" its
    # stochastic twin (fresh noise each update, as DDIM at eta 1)
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
        if self.sampler not in DPM and self.spacing is not None and self.spacing not in SPACINGS:
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
        if self.sampler in DPM:
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


@dataclass(frozen=True)
class Update:
    """What one update k of `sample_loop` saw and made, for `on_update` (the lab's timeline): the
    whole batch's x_t, the network's guided output (`prediction`: eps_theta or v_theta, as the
    network predicts), the eps_theta and x0_theta the step used, and x_s."""

    k: int
    t: int
    s: int
    x_t: torch.Tensor
    prediction: torch.Tensor
    eps_theta: torch.Tensor
    x0_theta: torch.Tensor
    x_s: torch.Tensor


def guided_eps(model, x_t, t_over_T, c, guidance, alpha_bar_t, with_prediction=False):
    """eps_theta(x_t, t / T, c), or with guidance eps_u + s (eps_c - eps_u) (Ho & Salimans 2022,
    eq. 6 with s = 1 + w) from ONE forward pass over the doubled batch [c; null context]. A v
    network's output becomes eps_theta by `eps_from_v`. `with_prediction`: return
    (eps_theta, the network's own guided output) instead."""
    if guidance is None:
        prediction = model(x_t, t_over_T, c)
        eps_theta = _as_eps(model, x_t, prediction, alpha_bar_t)
        return (eps_theta, prediction) if with_prediction else eps_theta
    x_both = torch.cat((x_t, x_t))
    prediction = model(x_both, torch.cat((t_over_T, t_over_T)), torch.cat((c, torch.zeros_like(c))))
    eps_c, eps_u = _as_eps(model, x_both, prediction, alpha_bar_t).chunk(2)
    eps_theta = eps_u + guidance * (eps_c - eps_u)
    if not with_prediction:
        return eps_theta
    pred_c, pred_u = prediction.chunk(2)
    return eps_theta, pred_u + guidance * (pred_c - pred_u)


def _as_eps(model, x_t, prediction, alpha_bar_t):
    """The network's output as eps_theta: itself for an eps network (any module that does not
    say otherwise, the course's own for one), `eps_from_v` for a v one."""
    if getattr(model, "prediction", "eps") == "eps":
        return prediction
    return eps_from_v(x_t, prediction, alpha_bar_t)


@torch.inference_mode()
def sample_loop(model, schedule: Schedule, shape, c=None, config: SamplerConfig | None = None,
                seed: int = 0, keep_frames: bool = False, on_update=None):
    """Run the reverse process from x_T ~ N(0, I) and return (x0, frames, frame_timesteps).

    `shape` is (B, C, H, W); `c` (B, n_cfeat) or None (the null context for a conditional model).
    `frames` holds x after the updates `SamplerConfig.keeps_frame` picks (on x's device), and
    `frame_timesteps` the timestep each frame sits at. `on_update(Update)` is called after every
    update, if given. Noise: see the module docstring.
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
    alpha_bar = schedule.alpha_bar[t_device]  # float64: alpha_bar_t of every visited t
    frames, frame_timesteps = [], []
    for k in range(1, len(visited)):
        t, s, x_t = visited[k - 1], visited[k], x
        guided = guided_eps(model, x_t, t_over_T[k - 1].expand(batch), c, config.guidance_at(t),
                            alpha_bar[k - 1], with_prediction=on_update is not None)
        eps_theta, prediction = guided if on_update is not None else (guided, None)
        eps_theta = eps_theta.float()
        if config.fused:
            x = update(x_t, eps_theta, t_device[k - 1].expand(batch), t_device[k].expand(batch),
                       schedule, seed, k)
        else:
            x = update(x_t, eps_theta, t, s, schedule, seed, k)
        if on_update is not None:
            x0_theta = predict_x0(x_t, eps_theta, alpha_bar[k - 1])
            on_update(Update(k, t, s, x_t, prediction.float(), eps_theta, x0_theta, x))
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

    def ode_step(x, eps_theta, t, s, schedule, seed, k, x0_theta_prev, t_prev):
        return dpm_solver_step(x, eps_theta, t, s, schedule, x0_theta_prev, t_prev)

    def sde_step(x, eps_theta, t, s, schedule, seed, k, x0_theta_prev, t_prev):
        z = randn_like_step(x, seed, k) if s > 0 else None  # s = 0: sigma = 0, no noise
        return dpm_solver_sde_step(x, eps_theta, t, s, schedule, z, x0_theta_prev, t_prev)

    if config.sampler in DPM:
        return _multistep(ode_step if config.sampler == "dpm++2m" else sde_step)
    return ddim if config.sampler == "ddim" else ddpm


def _multistep(step):
    """x_t -> x_s with DPM-Solver++(2M), ODE or SDE, which keeps one update's state for the next:
    the previous x0_theta and the timestep it was predicted at (Algorithm 2's buffer Q). The
    first update has none and is first order. `step` takes the noise index (seed, k) of update k,
    which the SDE draws its z with and the ODE ignores."""
    previous = (None, None)  # (x0_theta_prev, t_prev)

    def dpm(x, eps_theta, t, s, schedule, seed, k):
        nonlocal previous
        x_s, x0_theta = step(x, eps_theta, t, s, schedule, seed, k, *previous)
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

    def ode_step(x, eps_theta, t, s, schedule, seed, k, x0_theta_prev, t_prev):
        return kernels.dpm_solver_step(x, eps_theta, t, s, schedule, x0_theta_prev, t_prev)

    def sde_step(x, eps_theta, t, s, schedule, seed, k, x0_theta_prev, t_prev):
        # the s = 0 update draws z too, times sigma = 0: the same pixels as the torch twin's
        return kernels.dpm_solver_sde_step(x, eps_theta, t, s, schedule, None, x0_theta_prev,
                                           t_prev, seed=seed, k=k)

    if config.sampler in DPM:
        return _multistep(ode_step if config.sampler == "dpm++2m" else sde_step)
    return ddim if config.sampler == "ddim" else ddpm


def load_kernels():
    """`minidiff.kernels` with its backend chosen (the GPU, else Triton's interpreter), or a
    one-line MinidiffError when Triton is not installed."""
    from minidiff import kernels  # imports no Triton

    try:
        return kernels.load()
    except ImportError as error:
        if "triton" not in str(error).lower():
            raise
        raise MinidiffError("--fused needs Triton, which is not installed here (pip install "
                            "triton; Linux only); sample without --fused") from None
