# %% [markdown]
# # Chapter 1 — Noising: ink in water
#
# **You will learn**
# - what the forward process q(x_t | x0) does to a sprite, step by step;
# - what the schedule's beta_t, alpha_bar_t and signal-to-noise ratio are, and how the course's
#   linear schedule differs from the cosine one;
# - why the end of the forward process is (almost) a standard normal, which is what lets a
#   sampler start from pure noise;
# - how the NumPy reference and the torch code compute the same thing, and one place where the
#   course's notebook departs from the paper.
#
# **Code this chapter explains:** `reference/noising.py` (`make_schedule`, `q_sample`) and its
# torch twin `minidiff/noising.py`. Tests: `tests/test_noising.py`.

# %%
import numpy as np
import torch
from PIL import Image

import minidiff
from minidiff.data.images import grid, save_grid
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.reference import make_schedule, q_sample

from _plot import line_plot
from _tutorial import OUT, pick

# %% [markdown]
# ## The schedule
# A drop of ink in water spreads a little at every step until the glass is evenly grey. The
# forward process does the same to an image: at step t it keeps sqrt(1 - beta_t) of the image and
# adds noise of variance beta_t. The course uses T = 500 steps with beta rising linearly from 1e-4
# to 0.02. What matters for training is the product alpha_bar_t = prod alpha_s: the share of the
# original signal's variance still left after t steps.

# %%
s = make_schedule("linear", T=500, beta1=1e-4, beta2=0.02)  # the course's schedule
cosine = make_schedule("cosine", T=500)
for t in (1, 250, 500):
    print(f"t={t:3d}  beta={s.beta[t]:.6f}  alpha_bar={s.alpha_bar[t]:.6f}")
assert abs(s.alpha_bar[1] - (1 - 1e-4) * (1 - s.beta[1])) < 1e-12  # the course's extra factor

# %% [markdown]
# The course computes alpha_bar as a product over s = 0..t, *including* index 0, then sets
# alpha_bar_0 = 1. So its alpha_bar_1 = (1 - beta_0)(1 - beta_1) = 0.99976021, one factor more
# than DDPM's definition. minidiff keeps this quirk in its `linear` schedule so that your numbers
# match the notebooks; `tests/test_noising.py` pins the anchors.
#
# The signal-to-noise ratio alpha_bar / (1 - alpha_bar) is easiest to read on a log scale: the
# cosine schedule (Nichol & Dhariwal 2021) destroys information more slowly at the start.

# %%
t = np.arange(s.T + 1)
line_plot({"linear (course)": (t, s.alpha_bar), "cosine": (t, cosine.alpha_bar)},
          OUT / "01_alpha_bar.png", title="alpha_bar_t: signal left after t steps", xlabel="t")
snr = {name: (t[1:], sch.alpha_bar[1:] / (1 - sch.alpha_bar[1:]))
       for name, sch in (("linear (course)", s), ("cosine", cosine))}
line_plot(snr, OUT / "01_snr.png", title="SNR = alpha_bar / (1 - alpha_bar), log scale",
          xlabel="t", log_y=True)
print("saved", OUT / "01_alpha_bar.png", "and", OUT / "01_snr.png", "(log scale)")
assert all(np.diff(sch.alpha_bar).max() < 0 for sch in (s, cosine))  # signal only ever leaves
first_half = t <= s.T // 2  # the cosine schedule keeps more signal early on:
assert (cosine.alpha_bar[first_half][1:] > s.alpha_bar[first_half][1:]).all()

# %% [markdown]
# ## One sprite, noised
# DDPM eq. (4) jumps straight from x0 to any x_t:
#
#     x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)
#
# Pixels live in [-1, 1], as in the course (ToTensor, then Normalize(0.5, 0.5)).

# %%
images, labels = make_sprites(n=pick(10, 5), seed=0)
x0 = images[:1].transpose(0, 3, 1, 2) / 127.5 - 1.0  # uint8 NHWC -> float NCHW in [-1, 1]
print(f"a {CLASSES[labels[0]]} sprite, pixel range [{x0.min():.3f}, {x0.max():.3f}]")
steps = [0, 25, 50, 100, 200, 300, 400, 500]
eps = np.random.default_rng(0).standard_normal(x0.shape)
strip = np.concatenate([q_sample(x0, np.array([k]), eps, s) for k in steps])
save_grid(torch.from_numpy(strip), OUT / "01_noised.png", nrow=len(steps), scale=6,
          captions=[f"t={k}" for k in steps])  # each column labelled with its t
print("saved", OUT / "01_noised.png", "for t =", steps)

# %% [markdown]
# ## The torch twin computes the same numbers
# `minidiff.q_sample` is the same formula on batched tensors with one timestep per sample, on any
# device. It runs in float32 here; the reference is float64.

# %%
schedule = minidiff.make_schedule()  # the reference's tables, as float64 tensors
batch = torch.from_numpy(np.repeat(x0, len(steps), axis=0)).float()
noise = torch.from_numpy(np.repeat(eps, len(steps), axis=0)).float()
x_t = minidiff.q_sample(batch, torch.tensor(steps), noise, schedule)
print("largest difference torch vs reference:", float(np.abs(x_t.numpy() - strip).max()))
assert np.allclose(x_t.numpy(), strip, atol=1e-5)

# %% [markdown]
# ## Why the end is a standard normal
# At t = T only sqrt(alpha_bar_T) = 0.079 of the image is left and the noise has variance
# 1 - alpha_bar_T = 0.9937. Whatever sprite we started from, x_T is nearly N(0, I): the model has
# "no idea" what the image was. That is why sampling can start from torch.randn.
#
# Eq. (4) also keeps the variance of x_t at 1 all the way when the data has variance 1. The
# course's notebook writes the noise term as (1 - alpha_bar_t) * eps, without the square root:
# its x_t then has variance alpha_bar_t + (1 - alpha_bar_t)^2, which dips to 0.75 where
# alpha_bar_t = 1/2.
# The network trains on images less noisy than the sampler's formulas assume. minidiff follows
# the paper; here is the difference, measured. A few thousand draws of N(0, 1) have a variance
# of about 1, not exactly 1 (0.98 or 1.02 is typical), and that wobble would show in the curves;
# so the draws below are standardised first: mean exactly 0, variance exactly 1, and data and
# noise exactly uncorrelated. The measured variances then equal the formulas to rounding.

# %%
n = pick(20_000, 2_000)
draws = np.random.default_rng(1).standard_normal((n, 2))
draws -= draws.mean(axis=0)
orthonormal, _ = np.linalg.qr(draws)  # columns: mean 0, length 1, orthogonal to each other
data, noise_draws = np.hsplit(orthonormal * np.sqrt(n), 2)  # (n, 1) each, variance exactly 1
correlation = np.corrcoef(data[:, 0], noise_draws[:, 0])[0, 1]
print(f"data: mean {data.mean():+.1e}, variance {data.var():.6f}; noise variance "
      f"{noise_draws.var():.6f}; correlation {correlation:+.1e}")
variance_eq4, variance_course = [], []
for k in t[1:]:
    ab = s.alpha_bar[k]
    variance_eq4.append(q_sample(data, np.full(n, k), noise_draws, s).var())
    variance_course.append((np.sqrt(ab) * data + (1 - ab) * noise_draws).var())
line_plot({"DDPM eq. (4)": (t[1:], variance_eq4), "course notebook": (t[1:], variance_course)},
          OUT / "01_variance.png", title="Var(x_t) for unit-variance data", xlabel="t")
print("saved", OUT / "01_variance.png")
print(f"Var(x_T): eq. (4) {variance_eq4[-1]:.3f}, course {variance_course[-1]:.3f}; "
      f"lowest on the way: eq. (4) {min(variance_eq4):.3f}, course {min(variance_course):.3f}")
assert np.allclose(variance_eq4, 1.0, atol=1e-9)  # eq. (4) keeps unit variance at every t
course_formula = s.alpha_bar[1:] + (1 - s.alpha_bar[1:]) ** 2
assert np.allclose(variance_course, course_formula, atol=1e-9)
assert abs(min(variance_course) - 0.75) < 0.01  # the dip where alpha_bar_t = 1/2

# %% [markdown]
# ## A whole class at once
# The same t for a row of different sprites: by t = 300 you can no longer tell them apart.

# %%
row = images[: pick(8, 4)].transpose(0, 3, 1, 2) / 127.5 - 1.0
eps_row = np.random.default_rng(2).standard_normal(row.shape)
rows = [q_sample(row, np.full(len(row), k), eps_row, s) for k in (0, 100, 300, 500)]
pixels = ((np.clip(np.concatenate(rows), -1, 1) + 1) * 127.5).round().astype(np.uint8)
Image.fromarray(grid(pixels.transpose(0, 2, 3, 1), nrow=len(row), scale=6)).save(
    OUT / "01_rows.png"
)
print("saved", OUT / "01_rows.png", "(rows: t = 0, 100, 300, 500)")
correlation = np.corrcoef(row.ravel(), rows[-1].ravel())[0, 1]
print(f"correlation of x_T with x0 over these sprites: {correlation:.3f} "
      f"(sqrt(alpha_bar_T) = {np.sqrt(s.alpha_bar[s.T]):.3f})")
assert abs(correlation) < 0.3  # x_T keeps next to nothing of the sprite

# %% [markdown]
# **Next:** chapter 2 runs the process backwards, one DDPM step at a time.
