# %% [markdown]
# # Chapter 5 — Control: asking for a hero, a potion, or both
#
# **You will learn**
# - what the context vector c is (one-hot for a class, zeros for "anything") and how the
#   pipeline builds it from class names;
# - how to sample by class, and that the same starting noise gives a different sprite for each
#   class;
# - how to mix contexts, as the course does with vectors like `[1, 0, 0.6, 0, 0]`, and what a
#   classifier makes of the mixtures;
# - classifier-free guidance, eps = eps_u + s (eps_c - eps_u): what its scale s does, in grids and
#   measured (how often a classifier agrees with the class asked for, and FID).
#
# **Code this chapter explains:** `minidiff/pipeline.py` (`Pipeline.contexts`, `Pipeline.sample`
# with `classes=`, `mix=`, `guidance=`), `minidiff/samplers.py` (`guided_eps`, `sample_loop`),
# where c enters the network in `minidiff/unet.py` (chapter 3), and the measurements in
# `minidiff/evaluation/metrics.py` (`conditional_accuracy`, `evaluate`). Tests:
# `tests/test_samplers.py` (`test_guidance_formula`) and `tests/test_pipeline.py`
# (`test_class_and_mix_contexts`).
#
# This chapter samples with the pipeline's default sampler, SDE-DPM-Solver++(2M) with 25 steps
# (chapter 6 explains it; `sampler="ddpm"` gives the course's 500 steps, 20 times slower). It
# needs chapter 4's trained run and trains it first if it is missing (a few minutes at full
# size), and the feature classifier of `minidiff/evaluation/classifier.py` (about 2 more minutes
# the first time).

# %%
import inspect

import torch

import minidiff
from minidiff.data.images import by_class, save_grid
from minidiff.evaluation.classifier import classify
from minidiff.evaluation.metrics import evaluate
from minidiff.samplers import SamplerConfig, guided_eps

from _trained import feature_classifier, nearest_other, trained_run, training_data
from _tutorial import OUT, SMALL, pick

pipe = minidiff.load(trained_run(), device="cpu")
print("classes, in context order:", pipe.classes)

# %% [markdown]
# ## The context is a vector
# The network was trained with each sprite's class as a one-hot vector of 5 numbers, and 10% of
# the time with the zero vector instead (chapter 4). `Pipeline.contexts` turns names into those
# vectors; `classes=None` gives None, which the network reads as zeros, the "null" context.

# %%
print(pipe.contexts(3, classes=["hero", "food", "spell"]))
print("no class:", pipe.contexts(3))

# %% [markdown]
# ## Sampling by class
# One row per class. Each row is sampled with the same seed, so sample j of every row starts from
# the very same noise x_T (minidiff's noise depends on the seed and the sample's position, not on
# the class): down a column, only the context differs.

# %%
per_class, seed = pick(8, 2), 0
rows = [pipe.sample(per_class, classes=name, seed=seed) for name in pipe.classes]
save_grid(by_class(rows), OUT / "05_classes.png", nrow=len(rows))
print("saved", OUT / "05_classes.png", "(columns:", ", ".join(pipe.classes) + ")")
assert not torch.allclose(rows[0], rows[1])  # the same noise, another class: another sprite

# %% [markdown]
# ## Mixing contexts
# Nothing forces c to be one-hot. The course feeds hand-written vectors through the same
# network: a hero with a dash of food, food and spell together, a hero who is also side-facing.
# Each column below is one vector (the pipeline cycles a list of vectors over the batch).

# %%
MIXES = {
    "hero": [1, 0, 0, 0, 0],
    "hero + 0.6 food": [1, 0, 0.6, 0, 0],
    "0.6 food + 0.4 spell": [0, 0, 0.6, 0.4, 0],
    "hero + side-facing": [1, 0, 0, 0, 1],
    "hero + non-hero": [1, 1, 0, 0, 0],
    "hero + spell": [1, 0, 0, 1, 0],
}
per_mix = pick(6, 2)
mixed = pipe.sample(len(MIXES) * per_mix, mix=list(MIXES.values()), seed=seed)
save_grid(mixed, OUT / "05_mixes.png", nrow=len(MIXES))
print("saved", OUT / "05_mixes.png", "(columns:", "; ".join(MIXES) + ")")

# %% [markdown]
# What do the mixtures look like to a classifier trained on the real sprites?
# `minidiff/evaluation/classifier.py` trains a small one (it is also what FID below is measured
# with); here is the share of each column it puts in each class.

# %%
dataset = training_data()
classifier, info = feature_classifier(dataset)
print(f"feature classifier: {info['accuracy']:.1%} accurate on held-out real sprites")
predicted = classify(classifier, mixed).reshape(per_mix, len(MIXES))  # (sample, column)
print(f"  {'':22}" + "".join(f"{name:>12}" for name in pipe.classes))
for column, name in enumerate(MIXES):
    shares = [(predicted[:, column] == k).float().mean().item() for k in range(len(pipe.classes))]
    print(f"  {name:22}" + "".join(f"{share:12.0%}" for share in shares))

# %% [markdown]
# ## Classifier-free guidance
# The network knows two things at once: eps_c, its noise estimate given the class, and eps_u,
# given the null context. Their difference points from "any sprite" towards "this class".
# Classifier-free guidance (Ho & Salimans 2022) walks further along it:
#
#     eps = eps_u + s * (eps_c - eps_u)
#
# s = 0 ignores the class, s = 1 is the plain conditional model, s > 1 exaggerates the class.
# The course trains for this (the 10% null context) but does not use it; its ancestor
# (Conditional_Diffusion_MNIST) samples with w = s - 1. minidiff runs both halves in one forward
# pass over a doubled batch:

# %%
print(inspect.getsource(guided_eps))

# %% [markdown]
# The same seeds and classes at four scales. One grid per scale, one column per class.

# %%
SCALES = (0.0, 1.0, 2.0, 4.0)
variety = {}  # per scale: how different the sprites of one class row are from each other
for s in SCALES:
    rows = [pipe.sample(per_class, classes=name, guidance=s, seed=seed) for name in pipe.classes]
    save_grid(by_class(rows), OUT / f"05_guidance_{s:g}.png", nrow=len(rows))
    variety[s] = float(torch.stack([nearest_other(row).median() for row in rows]).mean())
    if s == 0:  # eps_u + 0 (eps_c - eps_u) = eps_u: the class is ignored, every row alike
        assert all(torch.allclose(row, rows[0], atol=1e-5) for row in rows)
print("saved", ", ".join(str(OUT / f"05_guidance_{s:g}.png") for s in SCALES))

# %% [markdown]
# ## What the scale does, measured
# `minidiff.evaluation.metrics.evaluate` (what `python -m minidiff eval --guidance S` runs) samples
# n images with the data's own class mix and reports, among other things, the conditional accuracy
# (the share the classifier assigns to the class asked for) and FID against real sprites in the
# classifier's feature space (lower is better; "noise floor" is what real images score against
# other real images at this n). A third column, variety, comes from the grids above: the RMS
# pixel distance from each sprite to the most similar other sprite of its row (its class and
# scale), averaged over the rows.

# %%
n = pick(500, 50)
print(f"{'scale':>6} {'accuracy':>9} {'FID':>8} {'floor':>7} {'variety':>8}   ({n} samples each, "
      "SDE-DPM++2M 25)")
accuracy = {}
for s in SCALES:
    r = evaluate(pipe, dataset, SamplerConfig(guidance=s), n=n, seed=1, classifier=classifier,
                 classifier_info=info)
    accuracy[s] = r["conditional_accuracy"]
    print(f"{s:6g} {r['conditional_accuracy']:9.1%} {r['fid']:8.2f} {r['fid_noise_floor']:7.2f} "
          f"{variety[s]:8.3f}")
assert accuracy[max(SCALES)] >= accuracy[0.0] + pick(0.3, 0.15)  # guidance steers to the class
# and it costs variety (at the tiny CI sizes the sprites are not yet sprites: no lesson there)
assert SMALL or variety[max(SCALES)] < variety[0.0], variety

# %% [markdown]
# On the run above, read down the columns. At s = 0 the class is ignored (the five rows of the
# s = 0 grid are the same sprites), so accuracy is only what the data's own class mix gives by
# chance. As s grows the classifier should agree more and more often with the class asked for.
# FID here is measured in the features of a classifier, which mostly encode the class: it
# rewards typical, recognisable members of each class and sees little of the variety within a
# class, so with guidance it improves towards the noise floor while the sprites become more
# alike (at full size on 2026-12-03: FID 1.11 at s = 0, 0.60 at s = 4, floor 0.58). The variety
# column is there to show that cost: it shrinks as s grows (0.565 to 0.451 on that run), as each
# class column converges on a few typical sprites.
#
# **Next:** chapter 6 makes sampling 20 times faster.
