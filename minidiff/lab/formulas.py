"""One reverse update written out with its numbers, for the lab's timeline.

The coefficients come from the float64 specification (`minidiff.reference.samplers`,
`minidiff.reference.dpm_solver`), not from the torch steps the lab ran: the page shows the
equation the code is checked against. Notation: the glossary in `minidiff.reference`. At t = 500
of the course's schedule DDPM reads `x_499 = (x_500 - 0.0201 * eps) / 0.9899 + 0.1414 * z`.
"""

from __future__ import annotations

import numpy as np

from minidiff.reference import dpm_solver, samplers
from minidiff.reference.noising import Schedule, make_schedule

__all__ = ["reference_schedule", "update_text"]


def reference_schedule(config: dict) -> Schedule:
    """The float64 schedule of a run, from its checkpoint config's "schedule" entry."""
    return make_schedule(**config["schedule"])


def update_text(sampler: str, t: int, s: int, schedule: Schedule, eta: float = 0.0,
                t_prev: int | None = None) -> str:
    """The update from timestep t to s, its coefficients as numbers; `t_prev` is the timestep
    before t (DPM-Solver++(2M) uses it for its second-order correction)."""
    if sampler in ("ddpm", "ddpm-no-noise"):
        return _ddpm(t, s, schedule, "none" if sampler == "ddpm-no-noise" else "beta")
    if sampler == "ddim":
        return _ddim(t, s, schedule, eta)
    return _dpm(t, s, schedule, t_prev)


def _ddpm(t: int, s: int, schedule: Schedule, variance: str) -> str:
    s1, s2, s3 = (float(v[0]) for v in samplers.ddpm_coefficients(np.array([t]), schedule,
                                                              variance))
    # DDPM Algorithm 2, line 4, with 1 / sqrt(alpha_t) written as a division, as the course does
    text = f"x_{s} = (x_{t} - {_n(s2)} * eps) / {_n(1 / s1)}"
    if s3 > 0:
        return text + f" + {_n(s3)} * z"
    why = "the last step adds no noise" if t == 1 else "ddpm-no-noise: z = 0 at every step"
    return text + f"   ({why})"


def _ddim(t: int, s: int, schedule: Schedule, eta: float) -> str:
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar[t], schedule.alpha_bar[s]
    sigma = float(samplers.ddim_sigma(np.array([t]), np.array([s]), schedule, eta)[0])
    direction = float(np.sqrt(max(1 - alpha_bar_s - sigma**2, 0.0)))  # DDIM eq. (12)
    x0 = f"x0 = (x_{t} - {_n(np.sqrt(1 - alpha_bar_t))} * eps) / {_n(np.sqrt(alpha_bar_t))}"
    text = f"x_{s} = {_n(np.sqrt(alpha_bar_s))} * x0 + {_n(direction)} * eps"
    text += f" + {_n(sigma)} * z" if sigma > 0 else ""
    return f"{text},   {x0}   (DDIM eq. 12, eta {eta:g})"


def _dpm(t: int, s: int, schedule: Schedule, t_prev: int | None) -> str:
    ratio, phi, c = (float(v[0]) for v in dpm_solver.dpm_solver_coefficients(
        np.array([t]), np.array([s]), schedule, None if t_prev is None else np.array([t_prev])))
    text = f"x_{s} = {_n(ratio)} * x_{t} + {_n(phi)} * D"
    if t_prev is None:
        return text + ",   D = x0   (first order: no earlier x0 yet)"
    if c == 0:
        return text + ",   D = x0   (the last step lands on x0)"
    return text + f",   D = x0 + {_n(c)} * (x0 - x0 at t = {t_prev})   (Algorithm 2, line 5)"


def _n(value) -> str:
    """4 decimals as the course prints them; tiny numbers in scientific notation."""
    value = float(value)
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"
