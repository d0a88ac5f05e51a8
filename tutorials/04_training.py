# %% [markdown]
# # Chapter 4 — Training: add noise, predict it
#
# **You will learn**
# - the whole training algorithm in five lines (DDPM Algorithm 1, as the course runs it): pick a
#   sprite, a timestep and some noise, noise the sprite, and teach the network to name the noise;
# - how to train a ContextUnet on the built-in sprites with `minidiff.training.config`, and what its
#   run folder holds: the loss curve, preview grids as it learns, the checkpoint;
# - what the loss means at different t;
# - what the trainer's choices buy, measured on held-out sprites: the EMA of the weights, and
#   minidiff's recipe against the course's (Adam at a constant 1e-3, no clipping, no EMA);
# - what buys quality on real images at a fixed CPU budget: a network's cost per step, and
#   predicting v instead of eps (Salimans & Ho 2022), with the measured ablation.
# - why one number is not enough: FID sees what is drawn, patch SWD how crisply.
#
# **Code this chapter explains:** `minidiff/training/config.py` (`TrainConfig`, `train_config`,
# `learning_rate`), `minidiff/training/trainer.py` (`train`; `Trainer`'s setup, `train_step`,
# `loss` and the loop `run`), `minidiff/training/batches.py` (what each step draws),
# `minidiff/noising.py` (`q_sample`, `eps_from_v`) and `minidiff/unet.py` (the network it trains),
# then `minidiff/ema.py` (`EMA`), `minidiff/training/progress.py` (the bar and the --minutes
# budget) and `minidiff/training/runs.py` (the run folder). Tests:
# `tests/training/test_trainer.py`.
#
# **Time:** at full size this chapter trains for a few minutes on 2 CPU cores (one main run,
# one shorter run for the comparison); under MINIDIFF_TUTORIAL_SMALL=1 for seconds. The main run
# is saved in `OUT/run`, where chapters 2, 5 and 6 find it.

# %%
import inspect
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

import minidiff
from minidiff.checkpoint import CHECKPOINT_NAME
from minidiff.data.sprites import make_sprites
from minidiff.training import TrainConfig, train
from minidiff.training.trainer import Trainer
from minidiff.unet import UnetConfig, build_unet

from _plot import line_plot
from _trained import RUN, tutorial_config
from _tutorial import OUT, pick

# %% [markdown]
# ## One step, by hand
# The network eps_theta(x_t, t / T, c) is trained to recover the noise eps that made x_t:
#
# 1. x0 ~ the data, with its class c as a one-hot vector, replaced by zeros 10% of the time (the
#    "null" context, which chapter 5's guidance needs);
# 2. t ~ Uniform{1, ..., T};
# 3. eps ~ N(0, I);
# 4. x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4, chapter 1);
# 5. a gradient step on the mean squared error || eps - eps_theta(x_t, t / T, c) ||^2.
#
# Here are the five lines on a small batch, with a fresh (untrained) network:

# %%
schedule = minidiff.make_schedule()  # the course's: linear, T = 500
T = schedule.T
images, labels = make_sprites(n=pick(64, 16), seed=0)
x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, 16, 16), [-1, 1]
c = torch.eye(5)[torch.from_numpy(labels)]  # 1. one-hot contexts
c = c * (torch.rand(len(c), 1) >= 0.1)  # ... 10% of them the null context
t = torch.randint(1, T + 1, (len(x0),))  # 2.
eps = torch.randn_like(x0)  # 3.
x_t = minidiff.q_sample(x0, t, eps, schedule)  # 4.
torch.manual_seed(0)
model = build_unet(UnetConfig(n_feat=tutorial_config().n_feat))  # the run's width
loss = F.mse_loss(model(x_t, t / T, c), eps)  # 5. ...
loss.backward()  # ... and an optimizer step would follow
print(f"untrained loss: {loss.item():.3f} (a network that always answered 0 would score "
      f"{eps.square().mean().item():.3f}, the variance of the noise)")

# %% [markdown]
# The trainer's step is the same five lines, plus the engineering: the batch comes from
# `Batches` (every draw a function of the seed and the step number, so a resumed run continues
# exactly), the learning rate follows its schedule, the gradient is clipped, and the EMA is
# updated:

# %%
print(inspect.getsource(Trainer.train_step))

# %% [markdown]
# ## A real run
# `tutorial_config()` (in `tutorials/_trained.py`) is minidiff's default recipe, shortened to
# fit a tutorial. Every field is documented in `TrainConfig`; these are the ones that differ from
# the defaults:

# %%
config = tutorial_config()
defaults = TrainConfig()
for name, value in vars(config).items():
    if value != getattr(defaults, name):
        print(f"  {name} = {value!r}   (default {getattr(defaults, name)!r})")
if (RUN / CHECKPOINT_NAME).is_file():  # chapter 2, 5 or 6 trained it already
    print(f"{RUN} is already trained; reusing it (delete the folder to train again)")
else:
    start = time.perf_counter()
    train(config)  # returns the Trainer; everything we need is in the run folder
    print(f"trained in {time.perf_counter() - start:.0f} s")
print("the run folder:", sorted(p.name for p in RUN.iterdir()))

# %% [markdown]
# ## The loss curve
# `metrics.jsonl` has one line per `log_every` steps: the mean loss over those steps, the
# learning rate, the speed. The loss drops fast and then slowly; it never approaches 0, because
# at small t the faint noise cannot be told apart from the sprite's own detail (more below).

# %%
records = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines()]
LOSS_FALLS_BY = pick(0.3, 0.5)  # the last logged loss is below this share of the first
steps = [r["step"] for r in records]
target = json.loads((RUN / "config.json").read_text())["unet"]["prediction"]  # what it learns
line_plot({"training loss": (steps, [r["loss"] for r in records])}, OUT / "04_loss.png",
          title=f"loss: mean || {target} - {target}_theta ||^2 per logged window", xlabel="step")
line_plot({"learning rate": (steps, [r["lr"] for r in records])}, OUT / "04_lr.png",
          title="learning rate: linear warm-up, then cosine decay", xlabel="step")
print(f"loss {records[0]['loss']:.3f} at step {steps[0]} -> {records[-1]['loss']:.3f} at step "
      f"{steps[-1]}; {records[-1]['images_per_s']:.0f} images/s at the end")
print("saved", OUT / "04_loss.png", "and", OUT / "04_lr.png")
assert records[-1]["loss"] < LOSS_FALLS_BY * records[0]["loss"], "the loss should fall"

# %% [markdown]
# ## Samples as it learns
# Every `sample_every` steps the trainer draws a preview with the EMA weights: one row per
# class, the default sampler (SDE-DPM-Solver++(2M), 25 steps), the same starting noise every
# time, so the grids differ only by
# what the network has learnt. Side by side, left to right:

# %%
previews = sorted(RUN.glob("samples_*.png"))
tiles = [Image.open(p).convert("RGB") for p in previews]
gap = 8
strip = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1),
                          max(t.height for t in tiles)), "white")
left = 0
for tile in tiles:
    strip.paste(tile, (left, 0))
    left += tile.width + gap
strip.save(OUT / "04_learning.png")
print("saved", OUT / "04_learning.png", "(steps", ", ".join(p.stem[8:].lstrip("0") for p in
                                                             previews) + ")")

# %% [markdown]
# ## What the loss means at each t
# A fair yardstick for everything that follows: the same loss on sprites the network never saw,
# at fixed timesteps, with fixed noise. Expect it to fall with t: at small t the noise is a faint
# layer that is hard to tell from the sprite's own detail, while at large t x_t is mostly eps
# itself and easy to read back. The first lines of the table below show it on this run.

# %%
held_images, held_labels = make_sprites(n=pick(512, 32), seed=12345)  # not the training seed
held_x0 = torch.from_numpy(held_images).permute(0, 3, 1, 2).float() / 127.5 - 1
held_c = torch.eye(5)[torch.from_numpy(held_labels)]
held_eps = torch.randn(held_x0.shape, generator=torch.Generator().manual_seed(0))
TIMESTEPS = (25, 100, 250, 400)


@torch.inference_mode()
def held_out_loss(model: torch.nn.Module) -> dict[int, float]:
    """MSE of eps_theta against eps on the held-out sprites, at each of TIMESTEPS."""
    losses = {}
    for t in TIMESTEPS:
        t_batch = torch.full((len(held_x0),), t)
        x_t = minidiff.q_sample(held_x0, t_batch, held_eps, schedule)
        prediction = model.eval()(x_t, t_batch / T, held_c)  # eps_theta, or a v network's v
        eps_theta = prediction if model.prediction == "eps" else minidiff.noising.eps_from_v(
            x_t, prediction, schedule.alpha_bar[t])
        losses[t] = F.mse_loss(eps_theta, held_eps).item()
    return losses


def row(name: str, losses: dict[int, float]) -> str:
    cells = "  ".join(f"{losses[t]:.4f}" for t in TIMESTEPS)
    return f"  {name:32} {cells}  {sum(losses.values()) / len(losses):.4f}"


ema_model = minidiff.load(RUN, device="cpu").model  # the EMA weights (the default)
raw_model = minidiff.load(RUN, device="cpu", weights="model").model  # the last weights
torch.manual_seed(0)
untrained = build_unet(UnetConfig(n_feat=config.n_feat))  # the run's network before step 1
results = {"untrained network": held_out_loss(untrained),
           "minidiff recipe, EMA weights": held_out_loss(ema_model),
           "minidiff recipe, last weights": held_out_loss(raw_model)}
HEADER = "  " + " " * 32 + "  ".join(f"t={t:<4}" for t in TIMESTEPS) + "  mean"
print(HEADER)
for name, losses in results.items():
    print(row(name, losses))
mean = {name: sum(losses.values()) / len(losses) for name, losses in results.items()}
assert mean["minidiff recipe, EMA weights"] < LOSS_FALLS_BY * mean["untrained network"]

# %% [markdown]
# ## What the recipe buys
# The course trains with Adam at 1e-3, lowered at the start of each epoch to
# 1e-3 * (1 - epoch / epochs) (`lr_schedule="course"`, here squeezed into the short run), with no
# gradient clipping and no EMA. minidiff's default uses AdamW with a warm-up and a cosine decay from
# a higher peak (2e-3), clips the gradient at norm 1 and keeps an EMA with decay 0.995. To compare
# them fairly we train both for the same, shorter, number of steps on the same data, same network,
# same seed, and score them with the yardstick above.

# %%
short = pick(300, 10)
side_runs = {
    "minidiff recipe": tutorial_config(steps=short, sample_every=0, out=str(OUT / "run_recipe")),
    "course optimiser": tutorial_config(
        steps=short, sample_every=0, out=str(OUT / "run_course_optimiser"), optimizer="adam",
        lr=1e-3, lr_schedule="course", warmup_steps=0, grad_clip=0.0, ema_decay=0.0),
}
comparison = {}
for name, side_config in side_runs.items():
    if not (Path(side_config.out) / CHECKPOINT_NAME).is_file():
        train(side_config)
    comparison[f"{name}, {short} steps"] = held_out_loss(minidiff.load(side_config.out).model)
print(HEADER)
for name, losses in {**results, **comparison}.items():
    print(row(name, losses))

# %% [markdown]
# Read the table from the run above: the untrained network is the yardstick (the chapter checks
# that training took the held-out loss well below it); the next two lines say what averaging
# the weights did for the main run (with a learning rate that decays to zero, the last weights
# are already an average of sorts, so expect a small gap); the last two compare the recipes at
# equal steps.
# Lower is better. These are single runs with one seed, so small differences may be noise; the
# trainer's tests (`tests/training/test_trainer.py`) pin the behaviour, not these numbers.

# %% [markdown]
# ## On real images: what each ingredient buys
# The built-in sprites are easy: flat colours, clean outlines, five classes drawn by one program.
# Real images nobody here drew are harder, and a recipe tuned on the sprites can be poor on them.
# `benchmarks/train_quality.py` trains each recipe on 70% of a real set (here the 1,906 Google
# emoji of `../shared/data`, 9 classes) for the same CPU budget and measures it on the 30% it
# never saw: FID in a classifier trained on that data, beside the floor (as many real training
# images scored the same way), over 3 sample seeds. The data is not part of minidiff, so this
# chapter cannot rerun that table in CI; it reruns the two things that explain it.
#
# First, what a network costs. The budget is time, and a step of a network costs its
# floating-point operations: a network with half the channels does about a quarter of the work,
# so it takes about three times the steps in the same five minutes.

# %%
from torch.utils.flop_counter import FlopCounterMode

NETWORKS = {
    "minidiff, n_feat 64, 2x2 patches (the old default)": UnetConfig(n_feat=64),
    "minidiff, n_feat 32, 2x2 patches": UnetConfig(n_feat=32),
    "minidiff, n_feat 32, full resolution (--patch 1)": UnetConfig(n_feat=32, patch=1),
    "the course's ContextUnet, n_feat 64": UnetConfig(arch="course", n_feat=64),
}
flops = {}
for name, unet_config in NETWORKS.items():
    net = build_unet(unet_config).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 16, 16), torch.ones(1), torch.zeros(1, 5))
    flops[name] = counter.get_total_flops()
    params = sum(p.numel() for p in net.parameters())
    print(f"{name:52s} {flops[name] / 1e6:6.1f} MFLOP per image, {params:>9,} parameters")
names = list(NETWORKS)
assert flops[names[1]] < 0.3 * flops[names[0]], "half the channels: about a quarter of the work"
assert flops[names[3]] > 4 * flops[names[0]], "the course's network works at full resolution"

# %% [markdown]
# Second, what the network is asked to predict. The course's network predicts the noise eps, and
# every sampler turns that into a guess of the clean image, x0_theta = (x_t - sqrt(1 - alpha_bar_t)
# eps_theta) / sqrt(alpha_bar_t) (chapter 2). At large t, sqrt(alpha_bar_t) is small, so a small
# error in eps_theta becomes a large error in x0_theta: the first, noisiest steps of sampling build
# the picture on a shaky guess. minidiff's default network predicts
# v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 instead (Salimans & Ho 2022): it returns
# v_theta, and the loss and the samplers turn it into eps_theta by name (`noising.eps_from_v`),
# so every step still takes eps_theta. Written as a
# weight on the familiar eps loss, training on v weights step t by 1 / alpha_bar_t: it spends
# its effort where the picture is decided. Min-SNR-gamma (Hang et al. 2023,
# `--loss-weight min-snr`) goes the other way and turns down the nearly clean steps.

# %%
from minidiff.reference.noising import make_schedule as make_reference_schedule

reference_schedule = make_reference_schedule()  # float64: the spec
alpha_bar = torch.from_numpy(reference_schedule.alpha_bar)
print("    t   sqrt(alpha_bar)  x0 error per eps error  v weight  min-snr weight")
for t_show in (1, 50, 150, 300, 450, 500):
    a = float(alpha_bar[t_show])
    snr = a / (1 - a)
    print(f"  {t_show:3d}        {a ** 0.5:.3f}              {((1 - a) / a) ** 0.5:7.2f}   "
          f"{1 / a:7.1f}          {min(snr, 5.0) / snr:.3f}")
assert 1 / alpha_bar[T] > 100 * (1 / alpha_bar[1]), "v weights the noisiest steps far more"

# %% [markdown]
# A weight says how much each t counts; line 2 of Algorithm 1 says how often each t is drawn at
# all. U{1..T} spends half of the draws at t > 250, where sigma_t = sqrt((1 - alpha_bar_t) /
# alpha_bar_t), the noise level of x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps, is above 1.6 and
# only the layout is decided. EDM (Karras et al. 2022) draws log sigma ~ N(-1.2, 1.2^2) instead;
# `--t-sampling lognormal` rounds that draw to the nearest t (`noising.lognormal_t`):

# %%
from minidiff.noising import lognormal_t

z = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
drawn = {"U{1..T}": torch.randint(1, T + 1, (100_000,)), "lognormal": lognormal_t(z, schedule)}
for name, t_drawn in drawn.items():
    print(f"{name:10s} t <= 50: {(t_drawn <= 50).float().mean():.2f}   "
          f"t > 250: {(t_drawn > 250).float().mean():.2f}")
assert (drawn["lognormal"] <= 50).float().mean() > 4 * (drawn["U{1..T}"] <= 50).float().mean()

# %% [markdown]
# Measured, it is no free sharpening: moving the draws toward low noise (p_mean -0.6) made the
# sprites' patch SWD a little lower but the Twitter emoji's worse on every measure, and moving them
# up (p_mean 0.5) bought those emoji FID at the price of texture (benchmarks/RESULTS.md, "Where
# the steps go"). So the default stays DDPM's U{1..T}.

# %% [markdown]
# What these buy on real images, measured (benchmarks/RESULTS.md, "A recipe for real images":
# 5 CPU-minutes each on 1,334 Google emoji, FID on the 572 held out, floor 0.25, lower is better):
#
# | recipe | steps in 5 minutes | FID | classified as asked |
# | --- | --- | --- | --- |
# | n_feat 64, predicting eps (minidiff's old default) | 855 | 1.91 | 0.455 |
# | n_feat 32, full resolution, eps | 795 | 1.68 | 0.472 |
# | n_feat 32, eps | 2,480 | 1.19 | 0.537 |
# | n_feat 32, eps, mirrored images (`--hflip`) | 2,480 | 1.16 | 0.525 |
# | n_feat 32, eps, Min-SNR weights | 2,480 | 0.72 | 0.621 |
# | n_feat 32, predicting v (**the default**) | 2,480 | 0.69 | 0.669 |
#
# Two ingredients carry it: a network cheap enough to take three times the steps, and a target
# that does not blow up at large t. The samples of each recipe, the same seeds, one column per
# class (the first two rows of each run's grid): smileys, people and flags come out
# recognisable in five minutes, most other emoji are still blotches, and the speckle thins as
# FID falls.
#
# ![the ablation's samples on emoji](../docs/ablation_emoji.png)
#
# Real images need more than five CPU-minutes; the instrument that says so is
# `benchmarks/train_quality.py`.
#
# ## What is drawn, and how crisply: one number is not enough
# FID in the feature classifier (chapter 5 measures with it) asks whether the samples show *what*
# real sprites show. It does not ask how crisply: a sprite with smudged outlines and stray-coloured
# speckle is still, to the classifier, a hero. Patch SWD (`minidiff.evaluation.texture`, Karras et
# al. 2018) compares random 5x5 patches of the samples with patches of real images, each patch
# less its own mean colour, so it sees outlines and flat areas. Each number means something only
# beside its floor, real images against other real images:

# %%
from minidiff.evaluation.texture import box_blur, hf_ratio, patch_swd

pixels, labels = make_sprites(n=pick(2000, 200), seed=1)
real = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1  # uint8 NHWC -> [-1, 1]
half = len(real) // 2
a, b = real[:half], real[half:]
# the samples ask for b's classes, image for image, so they stand where b stands
samples = minidiff.load(RUN, device="cpu").sample(half, classes=labels[half:].tolist(), seed=0)
swd = {"real (the floor)": patch_swd(b, a), "real, blurred 2x2": patch_swd(box_blur(b), a),
       "this chapter's run": patch_swd(samples, a)}
for name, value in swd.items():
    print(f"  patch SWD x 1e3, {name:20s} {value:7.1f}")
print(f"  high-frequency ratio of the samples: {hf_ratio(samples, a):.2f} (real 1.0)")
assert swd["real, blurred 2x2"] > 5 * swd["real (the floor)"], "blur is what SWD sees"
assert swd["this chapter's run"] > 2 * swd["real (the floor)"], "the samples are not yet crisp"

# %% [markdown]
# Two 5-CPU-minute runs on the built-in sprites (benchmarks/RESULTS.md, "Crisp pixels"), real
# held-out sprites on the left, samples on the right. FID calls both as good as real: 0.08 and
# 0.05 against a floor of 0.06. Patch SWD says neither is: 85 and 55 against a floor of 11. The
# eye agrees with SWD: the second run (`--pixel-feat 16`, a full-resolution head) draws cleaner
# outlines, and both still speckle. On the rltiles items, also pixel art, the head lowers SWD at
# the same FID; on real emoji it bought nothing, so it is a flag, not the default: measure both
# numbers on your own data. Full resolution all the way down is no shortcut at this budget: at
# the same CPU time, `--patch 1 --n-feat 16` (2.6x the cost per step) and the course's own
# network at n_feat 16 lower SWD at guidance 1 and raise FID on every set they were run on ("The
# other candidates" in benchmarks/RESULTS.md). Both grids were drawn with DDIM-25 at
# eta 1; the sampler is a lever too. SDE-DPM-Solver++(2M), minidiff's default since (chapter 6),
# takes a default run's SWD from 88 to 63 at guidance 1, its FID from 0.10 to 0.08 ("The default
# sampler" in benchmarks/RESULTS.md).
#
# ![default: FID 0.08, SWD 85](../docs/texture_sprites_default.png)
# ![--pixel-feat 16: FID 0.05, SWD 55](../docs/texture_sprites_head16.png)
#
# **Next:** chapter 5 steers the trained network towards a class.
