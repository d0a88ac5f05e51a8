"""minidiff: diffusion models from scratch, the way the "How Diffusion Models Work" course
teaches them, with a NumPy specification (`minidiff.reference`), readable torch code (this
package) and fused Triton kernels (`minidiff.kernels`).

The course's concepts sit at the top of this package (`noising`: the schedule and the forward
process; `unet`: the networks; `samplers` and `dpm_solver`: the reverse steps and
the sampling loop; `philox`: the noise stream; `ema`; `checkpoint`; `pipeline`: `minidiff.load`;
`autoencoder`: latent diffusion's first stage); plumbing is grouped below them (`data/`,
`training/`, `evaluation/`, `cli/`, `utils/`).

Papers: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021 (cosine
schedule), Ho & Salimans 2022 (classifier-free guidance), Salimans & Ho 2022 (v-prediction).

The names below load on first use, so `import minidiff` (or the reference) does not pull in
torch.
"""

from __future__ import annotations

from minidiff.utils.lazy import lazy_exports

__version__ = "0.1.0"

# name -> the module that owns it
_EXPORTS = {
    "ContextUnet": "minidiff.unet",  # the course's network, by its course name
    "Schedule": "minidiff.noising",
    "make_schedule": "minidiff.noising",
    "q_sample": "minidiff.noising",
    "ddpm_step": "minidiff.samplers",
    "ddim_step": "minidiff.samplers",
    "ddim_timesteps": "minidiff.samplers",
    "sample_loop": "minidiff.samplers",
    "load": "minidiff.pipeline",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
