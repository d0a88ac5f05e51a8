"""The forward process in torch: the schedule's tables on a device, q_sample (DDPM eq. 4) and its
inversions, batched: `minidiff.reference.noising`'s twins, name for name.

The tables are computed once by the reference (float64, NumPy) and copied into float64 tensors
here, so the torch side cannot drift from the specification. Notation: the glossary in
`minidiff.reference` (reference/__init__.py); `eps` is the TRUE noise. The rules (`check_t`, and
`check_same_shape`, re-exported) are the reference's own.

Tutorial: tutorials/01_noising.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from minidiff.reference import noising as reference
from minidiff.reference.noising import check_same_shape  # noqa: F401 (re-exported)

P_MEAN, P_STD = reference.P_MEAN, reference.P_STD
TABLES = ("beta", "alpha", "alpha_bar", "alpha_bar_prev", "beta_tilde")
KINDS = reference.KINDS


@dataclass(frozen=True)
class Schedule:
    """Torch twin of `minidiff.reference.Schedule`: float64 tensors of length T + 1."""

    kind: str
    T: int
    beta: torch.Tensor
    alpha: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    beta_tilde: torch.Tensor

    @classmethod
    def from_reference(cls, ref: reference.Schedule) -> Schedule:
        tables = {name: torch.from_numpy(getattr(ref, name).copy()) for name in TABLES}
        return cls(kind=ref.kind, T=ref.T, **tables)

    def to(self, device: torch.device | str | None) -> Schedule:
        """The same tables on `device` (float32 on Apple's MPS, which has no float64)."""
        if device is None:
            return self
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        moved = {name: getattr(self, name).to(device, dtype) for name in TABLES}
        return dataclasses.replace(self, **moved)

    @property
    def device(self) -> torch.device:
        return self.beta.device


def make_schedule(
    kind: str = "linear",
    T: int = 500,
    beta1: float = 1e-4,
    beta2: float = 0.02,
    device: torch.device | str | None = None,
) -> Schedule:
    """`minidiff.reference.make_schedule`, as tensors on `device` (see it for the formulas)."""
    return Schedule.from_reference(reference.make_schedule(kind, T, beta1, beta2)).to(device)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, else x's own floating dtype: the step math never runs
    in fp16/bf16, whose 3-digit precision loses the small differences a step makes."""
    return torch.promote_types(x.dtype, torch.float32)


def check_t(
    t, T: int, x: torch.Tensor | None = None, name: str = "t", low: int = 1
) -> torch.Tensor:
    """`minidiff.reference.noising.check_t` on an int or a tensor: t as int64 (B,) on x's device.

    The rule and its messages are the reference's; t is read on the host for it (so checking a
    CUDA tensor waits for the GPU).
    """
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        t = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    t = torch.from_numpy(reference.check_t(t, T, x, name, low))
    return t if x is None else t.to(x.device)


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] for each sample, shaped (B, 1, ..., 1) to broadcast against x.

    Kept in the table's float64: callers combine coefficients (1 - alpha_bar_t, square roots)
    first and cast once, because 1 - alpha_bar_t near t = 1 loses most of its digits in float32.
    """
    return table[t].reshape((-1,) + (1,) * (x.ndim - 1))


def q_sample(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t from x0, a per-sample timestep t in [0, T] and noise eps (DDPM eq. 4)."""
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    dtype = compute_dtype(x0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    signal, noise = alpha_bar_t.sqrt().to(dtype), (1 - alpha_bar_t).sqrt().to(dtype)
    return signal * x0.to(dtype) + noise * eps.to(dtype)


def predict_x0(x_t, eps_theta, alpha_bar_t) -> torch.Tensor:
    """x0_theta = (x_t - sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_bar_t) (eq. 4 solved
    for x0; DDIM eq. 12's "predicted x0"). `alpha_bar_t` is a float64 tensor that broadcasts
    against x_t (`extract`): the coefficients are made in its precision and cast once."""
    dtype = compute_dtype(x_t)
    sqrt_one_minus = (1 - alpha_bar_t).sqrt().to(dtype)
    return (x_t.to(dtype) - sqrt_one_minus * eps_theta.to(dtype)) / alpha_bar_t.sqrt().to(dtype)


def v_target(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """v = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x0 (Salimans & Ho 2022, sec. 4)."""
    check_same_shape(x0=x0, eps=eps)
    t = check_t(t, schedule.T, x0, low=0)
    dtype = compute_dtype(x0)
    alpha_bar_t = extract(schedule.alpha_bar, t, x0)
    return alpha_bar_t.sqrt().to(dtype) * eps.to(dtype) - (1 - alpha_bar_t).sqrt().to(dtype) * x0


def eps_from_v(x_t, v_theta, alpha_bar_t) -> torch.Tensor:
    """eps_theta = sqrt(1 - alpha_bar_t) * x_t + sqrt(alpha_bar_t) * v_theta: a v network's
    output as the noise prediction every reverse step takes. `alpha_bar_t` as in `predict_x0`."""
    dtype = compute_dtype(x_t)
    return ((1 - alpha_bar_t).sqrt().to(dtype) * x_t.to(dtype)
            + alpha_bar_t.sqrt().to(dtype) * v_theta.to(dtype))


def log_sigma(schedule: Schedule) -> torch.Tensor:
    """log sigma_t for t = 0..T, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (EDM's sigma;
    -inf at t = 0), in the tables' float64."""
    return 0.5 * torch.log((1 - schedule.alpha_bar) / schedule.alpha_bar)


def lognormal_t(z: torch.Tensor, schedule: Schedule, p_mean: float = reference.P_MEAN,
                p_std: float = reference.P_STD) -> torch.Tensor:
    """Training timesteps in 1..T with log sigma_t ~ N(p_mean, p_std^2), from z ~ N(0, 1)
    (EDM's p_train, rounded to the nearest log sigma_t): int64, on z's device."""
    ls = log_sigma(schedule)[1:].to(z.device)  # t = 1..T
    midpoints = (ls[1:] + ls[:-1]) / 2
    return torch.bucketize(p_mean + p_std * z.to(ls.dtype), midpoints) + 1
