# %% [markdown]
# # Chapter 2 — Sampling: running the noise backwards
#
# **You will learn**
# - the DDPM reverse step exactly as the course writes it (`denoise_add_noise`: scale, remove the
#   predicted noise, add fresh noise), and the three numbers s1, s2, s3 that make it up;
# - how a whole sampling loop walks t = 500, 499, ..., 1 from pure noise to a sprite, written out
#   by hand and checked against `minidiff.load(run).sample`;
# - what the network believes the final sprite is at every step (the "predicted x0");
# - why the fresh noise matters: leave it out and the samples lose their detail and collapse onto
#   a few smooth, typical sprites;
# - how to make the course's denoising animation.
#
# **Code this chapter explains:** `minidiff/samplers.py` (the steps `ddpm_coefficients`,
# `ddpm_step`, and the loop `SamplerConfig`, `sample_loop` around them), their specification
# `reference/samplers.py`, `minidiff/noising.py` (`predict_x0`, `eps_from_v`), the one-line entry
# point `minidiff/pipeline.py` (`minidiff.load`, `Pipeline.sample`), the noise stream
# `minidiff/philox.py`, and `minidiff/data/images.py` (`save_grid`, `save_gif`). Tests:
# `tests/test_samplers.py`, `tests/test_pipeline.py`.
#
# Sampling needs a trained network. Chapter 4 trains one; run on its own, this chapter samples
# from one you already have (the README's quick start, `runs/sprites`, or the chapters' run made
# as scripts or notebooks) or else trains chapter 4's first (a few minutes at full size; see
# `tutorials/_trained.py`).

# %%
import time

import torch

import minidiff
from minidiff import noising, philox, samplers
from minidiff.data.images import save_gif, save_grid

from _trained import nearest_other, trained_run
from _tutorial import OUT, pick

pipe = minidiff.load(trained_run(), device="cpu")  # the EMA weights, in eval mode
model, schedule = pipe.model, pipe.schedule
T = schedule.T
print(f"loaded {pipe.path}: {pipe.config['unet']['arch']} network, T = {T}, "
      f"classes {pipe.classes}")

# %% [markdown]
# ## One step, as the course writes it
# The course's notebook removes a scaled share of the predicted noise, rescales, and adds fresh
# noise of variance beta_t:
#
#     noise = b_t.sqrt()[t] * z
#     mean = (x - pred_noise * ((1 - a_t[t]) / (1 - ab_t[t]).sqrt())) / a_t[t].sqrt()
#     return mean + noise
#
# minidiff writes the same line with its three coefficients named (DDPM Algorithm 2, line 4):
#
#     x_{t-1} = s1 * (x_t - s2 * eps_theta) + s3 * z,
#     s1 = 1 / sqrt(alpha_t),  s2 = beta_t / sqrt(1 - alpha_bar_t),  s3 = sqrt(beta_t)
#
# (1 - alpha_t is beta_t). Below, the course's form is restated for reading, and checked against
# `minidiff.samplers.ddpm_step` on random tensors, so the two cannot drift apart.

# %%
def course_denoise_add_noise(x, t, pred_noise, z):
    """The course's step, in its own variable names (a_t, b_t, ab_t are the schedule's tables)."""
    a_t, b_t, ab_t = schedule.alpha.float(), schedule.beta.float(), schedule.alpha_bar.float()
    noise = b_t.sqrt()[t] * z
    mean = (x - pred_noise * ((1 - a_t[t]) / (1 - ab_t[t]).sqrt())) / a_t[t].sqrt()
    return mean + noise


x, eps_theta, z = torch.randn(3, 4, 3, 16, 16)
for t in (500, 250, 2):
    ours = samplers.ddpm_step(x, eps_theta, t, schedule, z)
    assert torch.allclose(ours, course_denoise_add_noise(x, t, eps_theta, z), atol=1e-5)
print("the course's step and minidiff's agree at t = 500, 250, 2")
for t in (500, 250, 100, 10, 2, 1):
    s1, s2, s3 = (float(c) for c in samplers.ddpm_coefficients(torch.tensor([t]), schedule))
    print(f"t = {t:3d}:  s1 = {s1:.5f}  s2 = {s2:.5f}  s3 = {s3:.5f}")

# %% [markdown]
# s1 is barely above 1 and s2 is small: each step removes only a sliver of the predicted noise
# and adds back a little fresh noise (s3). At t = 1 there is no fresh noise (s3 = 0, Algorithm 2
# line 3): the last step only cleans up. Five hundred small steps add up to the whole journey.
#
# ## The whole loop, by hand
# Start from x_T ~ N(0, I) (chapter 1: that is what the forward process ends in), then apply the
# step for t = T, ..., 1, asking the network for eps_theta at every step. The network sees t / T,
# and here the zero context ("no particular class"; chapter 5 is about choosing one). The course's
# network predicts eps_theta itself; minidiff's default predicts v (chapter 4), which
# `noising.eps_from_v` turns into eps_theta: eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v.
# minidiff draws
# its noise from a counter-based stream, `philox.randn_like_step(x, seed, k)` for step k, so a
# seed names the same images on every machine (chapter 7 explains the stream).

# %%
n, seed = pick(32, 8), 0
frames, predicted_x0 = [], []
start = time.perf_counter()
with torch.inference_mode():
    x = philox.randn_like_step(torch.empty(n, *pipe.image_shape), seed, 0)  # x_T, step k = 0
    for k, t in enumerate(range(T, 0, -1), start=1):
        prediction = model(x, torch.tensor(t, dtype=torch.float32).expand(n) / T)  # c=None: zeros
        eps_theta = prediction if model.prediction == "eps" else noising.eps_from_v(
            x, prediction, schedule.alpha_bar[t])
        if t % 100 == 0:  # what the network thinks x0 is: DDIM eq. (12)'s "predicted x0"
            predicted_x0.append(noising.predict_x0(x, eps_theta, schedule.alpha_bar[t]))
            frames.append(x)
        z = philox.randn_like_step(x, seed, k) if t > 1 else None  # no fresh noise at t = 1
        x = samplers.ddpm_step(x, eps_theta, t, schedule, z)
by_hand = x
frames.append(by_hand)  # t = 0: the sample itself
predicted_x0.append(by_hand)
print(f"{T} steps for {n} sprites by hand: {time.perf_counter() - start:.1f} s")
save_grid(by_hand, OUT / "02_samples.png", nrow=pick(8, 4))
print("saved", OUT / "02_samples.png")

# %% [markdown]
# `minidiff.load(run).sample(...)` runs the same loop (`sample_loop` in `minidiff/samplers.py`),
# with the same noise for the same seed, so it must give the same images:

# %%
start = time.perf_counter()
images, course_frames = pipe.sample(n, sampler="ddpm", seed=seed, return_intermediates=True,
                                    clip=False)  # unclipped, as the loop above leaves them
print(f"pipe.sample(sampler='ddpm'): {time.perf_counter() - start:.1f} s; largest difference "
      f"from the hand-written loop {float((images - by_hand).abs().max()):.2e}")
assert torch.allclose(images, by_hand, atol=1e-4)

# %% [markdown]
# ## What the network sees along the way
# `02_x_t.png`: x_t at t = 500, 400, ..., 100, then the finished sample, one row per sample.
# `02_predicted_x0.png`: at the same steps, the network's current guess of the clean sprite,
# x0 = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t) (`noising.predict_x0`, DDIM
# eq. (12), which DDIM itself uses, chapter 6). At t = 500 the division by
# sqrt(alpha_bar_t) (printed below) magnifies the network's errors, so the guess is mostly
# noise; soon after it is a blurry average sprite (from so little signal, the best guess is an
# average), and detail settles as t falls.

# %%
columns_t = [*range(T, 0, -100), 0]
assert len(columns_t) == len(frames)
for name, stack in (("02_x_t.png", frames), ("02_predicted_x0.png", predicted_x0)):
    strip = torch.stack([s[: pick(4, 2)] for s in stack], dim=1).flatten(0, 1)  # sample-major
    save_grid(strip, OUT / name, nrow=len(columns_t), normalize="clip",
              captions=[f"t={t}" for t in columns_t])  # each column labelled with its t
print("saved", OUT / "02_x_t.png", "and", OUT / "02_predicted_x0.png",
      "(columns: t =", ", ".join(map(str, columns_t)) + ")")
print("sqrt(alpha_bar_t) at those t:",
      ", ".join(f"{float(schedule.alpha_bar[t]) ** 0.5:.3f}" for t in columns_t))

# %% [markdown]
# ## The denoising animation
# The course keeps a frame when `i % 20 == 0 or i == T or i < 8` (32 frames for 500 steps) and
# shows them at 5 frames a second, each frame min-max normalised per image and channel so that
# the early, noisy frames are visible. `return_intermediates=True` kept exactly those frames.

# %%
print(f"{len(course_frames)} frames of {tuple(course_frames.shape[1:])}")
save_gif(list(course_frames), OUT / "02_denoising.gif", nrow=pick(8, 4))
print("saved", OUT / "02_denoising.gif")

# %% [markdown]
# ## Without the fresh noise
# The course then samples again with z = 0 at every step ("incorrectly"). `sampler=
# "ddpm-no-noise"` does that: the same start, the same network, only s3 * z removed. Each step
# then moves x towards the network's *average* guess and nothing pushes it back out, so the
# samples lose their detail and fall onto a few typical sprites, alike or repeated. Two
# measures below: detail, the mean difference between neighbouring pixels, and how far each
# sample is from its nearest other sample in the batch (small: near-repeats).

# %%
no_noise = pipe.sample(n, sampler="ddpm-no-noise", seed=seed)
save_grid(no_noise, OUT / "02_no_noise.png", nrow=pick(8, 4))
print("saved", OUT / "02_no_noise.png")


def detail(images: torch.Tensor) -> float:
    """Mean |difference| between horizontally and vertically neighbouring pixel values."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return float(dx + dy) / 2


measured = {}
for name, batch in (("with fresh noise", images.clamp(-1, 1)), ("without", no_noise)):
    nearest = nearest_other(batch)  # both clipped to [-1, 1], as pipe.sample returns them
    measured[name] = detail(batch), float(nearest.median())
    print(f"{name:17} detail {detail(batch):.3f}   nearest other sample: median "
          f"{nearest.median():.3f}, smallest {nearest.min():.3f}")
(detail_noise, near_noise), (detail_none, near_none) = measured.values()
assert detail_none < 0.9 * detail_noise, "without fresh noise the detail should fade"
assert near_none < 0.9 * near_noise, "without fresh noise the samples should crowd together"

# %% [markdown]
# On the run above, compare the two lines: less detail without the fresh noise, and
# nearest-neighbour distances that drop towards 0 where the same typical sprite comes out
# several times. The chapter checks both directions (the asserts above), at full size and at
# CI's small size alike; how far they go, look at the two grids to see.
#
# **Try it:** `python -m minidiff lab` (after `pip install -e ".[lab]"`) serves this chapter on
# your own run: choose `ddpm` or `ddpm-no-noise`, scrub the timeline through the 500 updates and
# read each one written out with its numbers, `x_499 = (x_500 - 0.0201 * eps) / 0.9899 + ...`.
#
# **Next:** chapter 3 opens the network that predicts eps.
