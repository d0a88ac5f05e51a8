"""The forward process: the noise schedule, q(x_t | x0) (DDPM eq. 4) and its inversions.

Notation: the glossary in `minidiff.reference` (reference/__init__.py). Every table is a float64
array of length T + 1 indexed by the timestep t, with t = 0 the clean image; `eps` is the TRUE
noise, the training target.

x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps ties three quantities together, so any two
give the third: `q_sample` (x0, eps -> x_t), `predict_x0` (x_t, eps_theta -> x0_theta), and, for a
network that predicts v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 instead of eps
(Salimans & Ho 2022, section 4), `v_target` and `eps_from_v`.

The course's notebooks noise with sqrt(alpha_bar_t) * x0 + (1 - alpha_bar_t) * eps, without the
square root on the noise coefficient. That is not eq. (4): its x_t has variance
alpha_bar_t + (1 - alpha_bar_t)^2 < 1, so the model trains on less noise than the sampler assumes.
minidiff implements eq. (4).

This module is the specification: NumPy only, float64, plain and explicit.

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("linear", "cosine")
P_MEAN, P_STD = -1.2, 1.2  # EDM's p_train: log sigma ~ N(P_mean, P_std^2) (Karras et al. 2022)


@dataclass(frozen=True)
class Schedule:
    """The tables of one noise schedule, each a float64 array of length T + 1 indexed by t."""

    kind: str
    T: int
    beta: np.ndarray
    alpha: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    beta_tilde: np.ndarray


def make_schedule(kind: str = "linear", T: int = 500, beta1: float = 1e-4, beta2: float = 0.02):
    """Build the schedule tables.

    `linear` is the course's schedule, reproduced exactly, quirk included:
    beta_t = (beta2 - beta1) * t / T + beta1 for t = 0..T, and alpha_bar_t is the cumulative
    product of alpha_s over s = 0..t, *index 0 included*, after which alpha_bar_0 is set to 1.
    For t >= 1 the course's alpha_bar therefore carries one factor (1 - beta1) more than DDPM's
    alpha_bar_t = prod_{s=1..t} alpha_s, and alpha_bar_1 != alpha_1 * alpha_bar_0.

    `cosine` is Nichol & Dhariwal (2021) eq. (17): alpha_bar_t = f(t) / f(0) with
    f(t) = cos^2(pi / 2 * (t / T + s) / (1 + s)), s = 0.008, and beta_t = 1 - alpha_bar_t /
    alpha_bar_{t-1} clipped at 0.999 (their section 3.2); beta1 and beta2 are not used.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a schedule; valid: {', '.join(KINDS)}")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1")
    T = int(T)
    t = np.arange(T + 1, dtype=np.float64)
    if kind == "linear":
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name}={value!r} must lie in the open interval (0, 1)")
        if beta2 < beta1:
            raise ValueError(f"beta2={beta2!r} must be >= beta1={beta1!r}")
        beta = (beta2 - beta1) * t / T + beta1
        alpha = 1.0 - beta
        alpha_bar = np.cumprod(alpha)  # the course's product includes s = 0
        alpha_bar[0] = 1.0
    else:
        s = 0.008
        f = np.cos(np.pi / 2 * (t / T + s) / (1 + s)) ** 2
        alpha_bar_unclipped = f / f[0]
        beta = np.zeros(T + 1)
        beta[1:] = np.minimum(1.0 - alpha_bar_unclipped[1:] / alpha_bar_unclipped[:-1], 0.999)
        alpha = 1.0 - beta
        alpha_bar = np.cumprod(alpha)  # alpha_0 = 1, so this is prod_{s=1..t} alpha_s
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    beta_tilde = np.zeros(T + 1)
    # DDPM eq. (7): posterior variance of q(x_{t-1} | x_t, x0)
    beta_tilde[1:] = (1.0 - alpha_bar_prev[1:]) / (1.0 - alpha_bar[1:]) * beta[1:]
    return Schedule(kind, T, beta, alpha, alpha_bar, alpha_bar_prev, beta_tilde)


def check_t(t, T: int, x=None, name: str = "t", low: int = 1) -> np.ndarray:
    """Return `t` as an int64 array, or raise ValueError if it is not integers in [low, T].

    The one range check of timesteps: the torch twin and the kernels ask this function. With `x`
    (a batch of shape (B, ...)), an int means the same timestep for every sample and an array must
    have shape (B,): one timestep per sample.
    """
    t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    if x is not None:
        batch = x.shape[0]
        if t.ndim == 0:
            t = np.full(batch, t)
        if t.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},) to match x, got {tuple(t.shape)}")
    if t.size and (t.min() < low or t.max() > T):
        bad = t[(t < low) | (t > T)].flat[0]
        raise ValueError(f"{name}={bad} is outside the valid range [{low}, {T}]")
    return t.astype(np.int64)


def extract(table, t, x):
    """table[t] for each sample, shaped (B, 1, ..., 1) to broadcast against x (t from `check_t`)."""
    return table[t].reshape((-1,) + (1,) * (x.ndim - 1))


def check_same_shape(**arrays) -> None:
    """Raise ValueError naming the first array (or tensor) whose shape differs from the first's.

    None entries are skipped: `z=None` is checked by `samplers.check_z`, not here.
    """
    (first_name, first), *rest = arrays.items()
    for name, a in rest:
        if a is not None and a.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} but {first_name} has {tuple(first.shape)}"
            )


def q_sample(x0, t, eps, schedule: Schedule) -> np.ndarray:
    """x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps, DDPM eq. (4).

    x0 and eps have the same shape (B, ...); t is an int or an integer array of shape (B,), one
    timestep per sample, each in [0, T] (t = 0 returns x0 itself).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    return np.sqrt(alpha_bar_t) * x0 + np.sqrt(1.0 - alpha_bar_t) * eps


def predict_x0(x_t, eps_theta, alpha_bar_t) -> np.ndarray:
    """x0_theta = (x_t - sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_bar_t): eq. (4) solved
    for x0, DDIM eq. (12)'s "predicted x0" and DPM-Solver++'s data prediction x_theta.
    `alpha_bar_t` broadcasts against x_t (`extract`)."""
    return (x_t - np.sqrt(1.0 - alpha_bar_t) * eps_theta) / np.sqrt(alpha_bar_t)


def v_target(x0, t, eps, schedule: Schedule) -> np.ndarray:
    """v = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x0 (Salimans & Ho 2022, section 4):
    what a v-prediction network learns to output for the x_t that `q_sample` makes."""
    x0 = np.asarray(x0, dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    return np.sqrt(alpha_bar_t) * eps - np.sqrt(1.0 - alpha_bar_t) * x0


def eps_from_v(x_t, v_theta, alpha_bar_t) -> np.ndarray:
    """eps_theta = sqrt(1 - alpha_bar_t) * x_t + sqrt(alpha_bar_t) * v_theta: eq. (4) and the
    definition of v solved for eps, so every reverse step can take a v network's output.
    `alpha_bar_t` broadcasts against x_t (`extract`)."""
    return np.sqrt(1.0 - alpha_bar_t) * x_t + np.sqrt(alpha_bar_t) * v_theta


def log_sigma(schedule: Schedule) -> np.ndarray:
    """log sigma_t for t = 0..T, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t): the noise level
    of x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps, the variable EDM (Karras et al. 2022) calls
    sigma. -inf at t = 0; strictly increasing in t, since alpha_bar_t falls."""
    with np.errstate(divide="ignore"):
        return 0.5 * np.log((1.0 - schedule.alpha_bar) / schedule.alpha_bar)


def lognormal_t(z, schedule: Schedule, p_mean: float = P_MEAN, p_std: float = P_STD) -> np.ndarray:
    """Training timesteps in 1..T with log sigma_t ~ N(p_mean, p_std^2), from z ~ N(0, 1).

    EDM's training distribution of noise levels, p_train(sigma) (Karras et al. 2022, section 5,
    Table 1: ln sigma ~ N(P_mean, P_std^2)), on a discrete schedule: each draw
    p_mean + p_std * z is rounded to the t whose log sigma_t (`log_sigma`) lies nearest, so the
    boundaries between t and t + 1 are the midpoints of their log sigmas. DDPM's t ~ U{1..T}
    spends half its steps on the course's schedule at sigma_t > 1.6 (t > 250), where only the
    layout is decided; EDM's defaults put 43% of the draws at t <= 50 (sigma_t <= 0.24).
    """
    z = np.asarray(z, dtype=np.float64)
    ls = log_sigma(schedule)[1:]  # t = 1..T
    midpoints = (ls[1:] + ls[:-1]) / 2
    return np.searchsorted(midpoints, p_mean + p_std * z, side="left").astype(np.int64) + 1
