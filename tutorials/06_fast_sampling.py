# %% [markdown]
# # Chapter 6 — Fast sampling: DDIM
#
# **You will learn**
# - how DDIM (Song et al. 2021) skips steps: predict the clean sprite, then jump straight to an
#   earlier timestep, re-using the predicted noise instead of drawing fresh noise;
# - the course's `denoise_ddim`, checked line for line against `minidiff.samplers.ddim_step`,
#   and which timesteps the course visits;
# - what "deterministic" buys: the same starting noise gives nearly the same sprite whatever the
#   number of steps;
# - how quality and speed trade off, measured: a table of FID, conditional accuracy and samples
#   per second for DDIM at several step counts and for DDPM's 500 steps.
#
# **Code this chapter explains:** `minidiff/samplers.py` (`ddim_step`, `ddim_timesteps`,
# `minidiff/sampling.py` (`SamplerConfig`), its specification `reference/samplers.py`, and the measurements of
# `minidiff/evaluation/metrics.py` (`evaluate`, what `python -m minidiff eval` prints, see
# `minidiff/cli/eval.py`). Tests: `tests/test_samplers.py`, `tests/test_sampling.py`.
#
# It needs chapter 4's trained run (trained first if missing: a few minutes at full size) and
# the feature classifier of `minidiff/evaluation/metrics.py` (about 2 minutes the first time). The quality
# table samples with DDPM too, which takes another minute or two at full size.

# %%
import inspect

import torch
from _trained import feature_classifier, trained_run, training_data
from _tutorial import OUT, pick
from minidiff.reference import samplers as ref

import minidiff
from minidiff import samplers
from minidiff.sampling import SamplerConfig
from minidiff.data.images import save_grid
from minidiff.evaluation.metrics import evaluate

pipe = minidiff.load(trained_run(), device="cpu")
schedule, T = pipe.schedule, pipe.schedule.T

# %% [markdown]
# ## The jump
# From x_t and the network's eps, DDPM's step goes to t - 1 and adds fresh noise. DDIM instead
# asks where the sprite would be if eps were exactly right, and jumps to any earlier s:
#
#     x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)          (eq. 12)
#     x_s     = sqrt(alpha_bar_s) x0_pred + sqrt(1 - alpha_bar_s) eps
#
# that is, x_s is x0_pred noised to level s with the *same* eps: no fresh noise (eta = 0). Here
# is the specification, and the course's `denoise_ddim` restated for reading and checked against
# minidiff's torch step:

# %%
print(inspect.getsource(ref.ddim_step))


def course_denoise_ddim(x, t, t_prev, pred_noise):
    """The course's DDIM step, in its own variable names (ab is alpha_bar)."""
    ab = schedule.alpha_bar[t].float()
    ab_prev = schedule.alpha_bar[t_prev].float()
    x0_pred = ab_prev.sqrt() / ab.sqrt() * (x - (1 - ab).sqrt() * pred_noise)
    dir_xt = (1 - ab_prev).sqrt() * pred_noise
    return x0_pred + dir_xt


x, eps = torch.randn(2, 4, 3, 16, 16)
for t, s in ((500, 480), (100, 80), (20, 0)):
    assert torch.allclose(samplers.ddim_step(x, eps, t, s, schedule),
                          course_denoise_ddim(x, t, s, eps), atol=1e-5)
print("the course's denoise_ddim and minidiff's ddim_step agree at (t, s) = (500, 480), "
      "(100, 80), (20, 0)")

# %% [markdown]
# (The course's `x0_pred` is already multiplied by sqrt(alpha_bar_prev); the sum is the same.)
#
# ## Which timesteps
# The course steps by T // n: `range(500, 0, -20)` for n = 25, then lands on 0, where
# alpha_bar = 1 and x_0 = x0_pred. minidiff calls that spacing "course"; "uniform" spreads n
# steps evenly from T to 1 instead.

# %%
for spacing in ("course", "uniform"):
    visited = samplers.ddim_timesteps(T, 25, spacing)
    print(f"{spacing:8} ({len(visited) - 1} jumps): {', '.join(map(str, visited))}")

# %% [markdown]
# ## Deterministic: the noise decides the sprite
# With eta = 0 the only randomness is x_T. Sample with the same seed (the same x_T) at 5, 10, 25
# and 100 steps, and with DDPM's 500 steps for comparison. Expect the DDIM rows to agree on most
# sprites, more closely as the step count grows, and DDPM, which draws fresh noise at every step,
# to end somewhere else from the same start; the distances printed below measure it.

# %%
n, seed = pick(8, 3), 0
STEPS = (5, 10, 25, 100)
rows = {f"DDIM {k}": pipe.sample(n, sampler="ddim", steps=k, seed=seed) for k in STEPS}
rows["DDPM 500"] = pipe.sample(n, sampler="ddpm", seed=seed)
save_grid(torch.cat(list(rows.values())), OUT / "06_steps.png", nrow=n)
print("saved", OUT / "06_steps.png", "(rows:", ", ".join(rows) + ")")
reference_row = rows["DDIM 100"]
for name, images in rows.items():
    rms = (images - reference_row).square().mean(dim=(1, 2, 3)).sqrt().mean()
    print(f"  {name:9} RMS distance from DDIM 100, same seed: {rms:.3f}")
again = pipe.sample(n, sampler="ddim", steps=25, seed=seed)
assert torch.equal(again, rows["DDIM 25"])  # the same seed, the same images, bit for bit

# %% [markdown]
# ## Quality against speed, measured
# `minidiff.evaluation.metrics.evaluate` is what `python -m minidiff eval --run RUN --sampler ddim --steps
# 25` runs: it samples n images with the data's class mix and measures FID against real sprites
# in a small classifier's feature space (lower is better; the noise floor is real against real,
# the best score possible at this n), the share of samples the classifier puts in the class asked
# for, and samples per second on this machine.

# %%
dataset = training_data()
classifier, info = feature_classifier(dataset)
n_eval = pick(300, 8)
settings = [("ddim", k, 0.0) for k in (5, 10, 25, 50)] + [("ddim", 25, 1.0), ("ddpm", T, 0.0)]
print(f"{n_eval} samples each, feature classifier {info['accuracy']:.1%} accurate on real sprites")
print(f"{'sampler':16} {'FID':>7} {'floor':>6} {'accuracy':>9} {'samples/s':>10} {'seconds':>8}")
table = {}
for sampler, steps, eta in settings:
    config = SamplerConfig(sampler=sampler, steps=steps, eta=eta)
    r = evaluate(pipe, dataset, config, n=n_eval, seed=1, classifier=classifier,
                 classifier_info=info)
    name = f"{sampler.upper()} {steps}" + (f", eta {eta:g}" if eta else "")
    table[name] = r
    print(f"{name:16} {r['fid']:7.2f} {r['fid_noise_floor']:6.2f} "
          f"{r['conditional_accuracy']:9.1%} {r['samples_per_second']:10.1f} "
          f"{r['sampling_seconds']:8.1f}")
speedup = table["DDIM 25"]["samples_per_second"] / table[f"DDPM {T}"]["samples_per_second"]
print(f"DDIM 25 draws {speedup:.0f}x as many samples per second as DDPM {T} on this run")

# %% [markdown]
# Read the table from the run above. Time goes with the number of network calls (the update
# itself is cheap; chapter 7 makes it cheaper still), so expect DDIM 25 near 500 / 25 = 20 times
# DDPM's speed; the last line prints what this run measured (on a machine shared with other work
# the times wander, the number of network calls does not). For quality, compare each FID with
# DDPM's and with the noise floor: with very few steps the jumps are too long and the sprites
# blur; more steps close the gap. eta = 1 puts fresh noise back into each jump (DDIM eq. 16),
# which the big jumps then also have to undo. (Under MINIDIFF_TUTORIAL_SMALL=1 the network is
# barely trained and n is tiny: the table then only shows the code runs.) The course reports the
# same kind of trade on its own CPU: 32 samples in 10.3 s with DDIM 25 against 2 min 22 s with
# DDPM 500.

# %% [markdown]
# **Next:** chapter 7 looks inside one step, fused into a single GPU kernel.
