"""minidiff.reference: the NumPy specification of the diffusion math (float64, NumPy only).

Everything else in minidiff (the torch functions, the Triton kernels, the tutorials) is tested
against these functions. Read them first: each docstring names the equation it implements.

## Notation: the glossary every layer uses

Papers: DDPM (Ho et al. 2020), DDIM (Song et al. 2021), improved DDPM (Nichol & Dhariwal 2021),
v-prediction (Salimans & Ho 2022), DPM-Solver++ (Lu et al. 2022b). Modules: `noising` (the
schedule and the forward process), `samplers` (DDPM and DDIM steps), `dpm_solver`, `philox` (the
noise stream). The reference, the torch twins (`minidiff.noising`, `.samplers`, `.dpm_solver`,
`.philox`), the kernels
(`minidiff.kernels`), the tests and the tutorials all use these names.

| name             | symbol         | meaning                                                      |
|------------------|----------------|--------------------------------------------------------------|
| `T`              | T              | number of diffusion steps; every table has length T + 1      |
| `t`, `s`         | t, s           | timesteps, integer arrays of shape (B,): one per sample; a   |
|                  |                | DDIM step jumps from t to an earlier s                       |
| `timesteps`      |                | only ever the list of timesteps a sampler visits, T ... 0    |
| `beta`           | beta_t         | variance of the noise added at step t                        |
| `alpha`          | alpha_t        | 1 - beta_t                                                   |
| `alpha_bar`      | alpha_bar_t    | signal kept after t steps; alpha_bar_0 = 1                   |
| `alpha_bar_prev` | alpha_bar_t-1  | alpha_bar shifted by one; 1 at t = 0                         |
| `beta_tilde`     | beta~_t        | posterior variance, DDPM eq. (7); 0 at t = 0                 |
| `x0`             | x_0            | a clean image                                                |
| `x_t`            | x_t            | the image noised to timestep t                               |
| `eps`            | epsilon        | the TRUE noise in x_t (q_sample's argument, the training     |
|                  |                | target); never the model's output                            |
| `eps_theta`      | epsilon_theta  | the network's noise prediction eps_theta(x_t, t): the        |
|                  |                | argument of every reverse step                               |
| `v_theta`        | v_theta        | a v-prediction network's output, its estimate of             |
|                  |                | v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0;        |
|                  |                | `eps_from_v` turns it into eps_theta                         |
| `x0_theta`       | x_0 predicted  | the model's predicted x0 (DDIM eq. (12)), from `predict_x0`  |
| `sigma`          | sigma_t        | standard deviation of the fresh noise a reverse step adds    |
| `z`              | z              | fresh N(0, I) noise a reverse step adds                      |
| `k`              |                | the noise index: x_T is drawn with k = 0 and the k-th update |
|                  |                | draws its z with `philox_seed(seed, k)` (see `philox.py`)    |

Contracts shared by every layer:
- `z=None` means "add no fresh noise", allowed only where the step's sigma is 0 for every
  sample, else ValueError (`samplers.check_z`). The kernels take `z=` (a tensor) or `seed=` (draw
  z in-kernel with `k=`); neither means no noise, under the same rule.
- `check_t` is the one range check of timesteps, `extract(table, t, x)` the one broadcast gather
  of per-sample coefficients, shaped (B, 1, ..., 1); in the kernels a sample's element count is
  `n_per_sample`.
"""

from .dpm_solver import dpm_solver_step, dpm_solver_timesteps
from .noising import Schedule, eps_from_v, make_schedule, predict_x0, q_sample, v_target
from .samplers import ddim_step, ddim_timesteps, ddpm_coefficients, ddpm_step

__all__ = [
    "Schedule",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_coefficients",
    "ddpm_step",
    "dpm_solver_step",
    "dpm_solver_timesteps",
    "eps_from_v",
    "make_schedule",
    "predict_x0",
    "q_sample",
    "v_target",
]
