# %% [markdown]
# # Chapter 9 — Latent diffusion: the same loop, in a smaller space
#
# **You will learn**
# - why Stable Diffusion denoises latents rather than pixels (Rombach et al. 2022): the cost of a
#   training step at 32x32 pixels against 8x8 latents, measured here;
# - how a small KL autoencoder squeezes a 32x32x3 sprite into 8x8x4 numbers and back: its loss,
#   the reparameterised latent, and what it keeps and loses (reconstructions and their PSNR);
# - what latents look like, and why they are rescaled to unit variance before diffusion;
# - that nothing else changes: the same schedule, network family and samplers run on latents,
#   and the samples are decoded at the end.
#
# **Code this chapter explains:** `minidiff/autoencoder.py` (`Autoencoder`, `autoencoder_loss`,
# `psnr`, `estimate_scale`; the data encoded once, `encode_dataset`; a run tied to its autoencoder,
# `autoencoder_of`), its settings `AutoencoderConfig` in `minidiff/training/config.py`, and its
# trainer `minidiff/training/autoencoder.py` (what `python -m minidiff train-autoencoder` runs,
# on the diffusion trainer's loop). Tests: `tests/test_autoencoder.py`. The full comparison at a
# fixed budget is `benchmarks/latent.py`.
#
# **Time:** at full size about ten minutes on 2 CPU cores (an autoencoder and a latent
# diffusion run on the built-in sprites at 32 px, 1,000 steps each, estimated from their step
# times of about 0.35 s and 0.3 s on one core); under MINIDIFF_TUTORIAL_SMALL=1 some seconds.

# %%
import inspect
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import minidiff
from minidiff.autoencoder import (
    Autoencoder,
    autoencoder_loss,
    encode_mean,
    latent_picture,
    load_autoencoder,
    psnr,
    reconstruct,
)
from minidiff.data.datasets import load_dataset
from minidiff.data.images import by_class, save_grid
from minidiff.evaluation.metrics import nearest_rms
from minidiff.training import TrainConfig, train
from minidiff.training.autoencoder import train_autoencoder
from minidiff.training.config import AutoencoderConfig
from minidiff.unet import UnetConfig, build_unet

from _tutorial import OUT, SMALL, pick

if SMALL:
    torch.set_num_threads(1)  # tiny tensors: a second thread mostly waits (see _trained.py)

# %% [markdown]
# ## Why latents: the cost of one step
# A diffusion model runs its network hundreds of times per sample and hundreds of thousands of
# times in training, always at the full size of the data. At 32x32 pixels a sprite is 3,072
# numbers; an autoencoder that shrinks each side 4 times into 4 channels leaves 8 x 8 x 4 = 256,
# twelve times fewer. The network reads the pixels as 2x2 patches (a 16x16 finest level) but
# each latent cell alone (8x8, below), so its feature maps shrink 4 times in area at every
# level, and its arithmetic with them. Time one training step (forward and backward) of the
# same minidiff network at both shapes, and count its operations (the count does not depend on
# the machine or its load; the time does):

# %%
batch, n_feat = pick(128, 16), pick(64, 16)


def step_cost(channels: int, size: int, patch: int, repeats: int = pick(5, 3)):
    """The median seconds of one forward + backward pass of the network at (channels, size), on
    patch x patch blocks (2 for pixels; 1 for latents, as `train --autoencoder` picks: below),
    and the floating-point operations it counts (torch's FlopCounterMode: convolutions and
    matrix products)."""
    torch.manual_seed(0)
    net = build_unet(UnetConfig(in_channels=channels, n_feat=n_feat, height=size, patch=patch))
    x, t, c = torch.randn(batch, channels, size, size), torch.rand(batch), torch.eye(5)[
        torch.arange(batch) % 5]
    with FlopCounterMode(display=False) as counter:
        net(x, t, c).square().mean().backward()
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        net(x, t, c).square().mean().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], counter.get_total_flops()


(pixel_step, pixel_flops), (latent_step, latent_flops) = step_cost(3, 32, 2), step_cost(4, 8, 1)
print(f"batch {batch}, n_feat {n_feat}: one step takes {pixel_step * 1000:.0f} ms on 32x32x3 "
      f"pixels and {latent_step * 1000:.0f} ms on 8x8x4 latents ({pixel_step / latent_step:.1f}x "
      f"cheaper); it counts {pixel_flops / latent_flops:.1f}x fewer operations")
assert pixel_flops > 3.5 * latent_flops, "the latent network's levels have a quarter the cells"

# %% [markdown]
# The price: an autoencoder to train first, and images that can only be as good as its
# reconstructions. The rest of the chapter pays it.
#
# ## The autoencoder
# The encoder E maps an image to the mean and log-variance of a Gaussian over latents; training
# draws z = mean + exp(logvar / 2) eps (the reparameterisation trick: the noise is an input, so
# the gradient flows through mean and logvar), decodes it, and minimises the reconstruction
# error plus a small KL term that keeps the latents near N(0, I) (the paper's "KL-reg"):

# %%
print(inspect.getsource(Autoencoder.forward))
print(inspect.getsource(autoencoder_loss))

# %% [markdown]
# `train_autoencoder` is what `python -m minidiff train-autoencoder --data ... --image-size 32`
# runs. The built-in sprites are drawn at 16x16 and enlarged to 32x32 here, so this chapter
# needs no downloaded data; `benchmarks/latent.py` does the same on real 32x32 emoji.

# %%
AE = OUT / pick("autoencoder", "autoencoder_small")
ae_config = AutoencoderConfig(n_images=pick(4000, 256), n_feat=pick(32, 8), batch_size=pick(64, 16),
                              steps=pick(1000, 80), checkpoint_every=0, progress=False,
                              holdout=pick(0.05, 0.1), out=str(AE))
if (AE / "checkpoint.pt").is_file():
    print(f"{AE} is already trained; reusing it (delete the folder to train again)")
else:
    train_autoencoder(ae_config)
autoencoder, state, _ = load_autoencoder(AE)
print(f"held-out PSNR {state['psnr_db']:.1f} dB, scale factor "
      f"{float(autoencoder.scale_factor):.3f}")
print("saved", AE / "reconstructions.png", "(each original above its reconstruction, one column "
      "per class)")

# %% [markdown]
# ## What it keeps and loses
# PSNR, 10 log10(1 / MSE) with pixels in [0, 1], measures the reconstruction error: 20 dB is an
# error of a tenth of the range on average, 30 dB of a thirtieth. Compare the trained
# autoencoder with the same network before training, on sprites it never saw:

# %%
held = load_dataset(None, image_size=32, n=pick(256, 32), seed=777)  # other sprites
torch.manual_seed(0)
untrained = Autoencoder(factor=4, latent_channels=4, n_feat=ae_config.n_feat)
before = float(psnr(held.images, reconstruct(untrained, held.images)).mean())
rebuilt = reconstruct(autoencoder, held.images)
after = psnr(held.images, rebuilt)
print(f"PSNR on {len(held)} new sprites: {before:.1f} dB untrained, {float(after.mean()):.1f} dB "
      f"trained (worst {float(after.min()):.1f}, best {float(after.max()):.1f})")
worst = after.argsort()[:pick(8, 4)]
save_grid(by_class([held.images[worst], rebuilt[worst]]), OUT / "09_worst.png", nrow=2)
print("saved", OUT / "09_worst.png", "(the worst reconstructed: original | reconstruction)")
assert float(after.mean()) > before + pick(10, 3), "training should sharpen the reconstructions"

# %% [markdown]
# Look at the worst ones: thin outlines and single-pixel eyes are what a 4x shrink blurs first;
# broad areas of flat colour survive. That is the bargain of a first stage: details finer than a
# latent cell must be redrawn by the decoder from what the latent suggests.
#
# ## What latents look like
# Each latent has 4 channels of 8x8. Shown as a 2x2 mosaic of grey tiles (one per channel),
# they still look like a coarse, smudged sprite: the autoencoder keeps the layout and recodes
# the colour. Their spread is the autoencoder's own, not 1, so the trainer measured 1 / std on
# the training latents and stored it with the weights (the paper's scale factor); diffusion
# trains on scaled latents, whose std is then about 1, like the pixels in [-1, 1].

# %%
mean = encode_mean(autoencoder, held.images)
scaled = mean * autoencoder.scale_factor
print(f"latent std {float(mean.std()):.3f} unscaled, {float(scaled.std()):.3f} scaled "
      f"(x {float(autoencoder.scale_factor):.3f})")
shown = held.images[: pick(8, 4)]
save_grid(torch.cat([shown, latent_picture(scaled[: len(shown)], 32)]), OUT / "09_latents.png",
          nrow=len(shown))
print("saved", OUT / "09_latents.png", "(top: sprites; below: their latents, channels 2x2)")
assert abs(float(scaled.std()) - 1) < 0.25, "scaled latents should have about unit spread"

# %% [markdown]
# ## Diffusion on latents, then decoding
# `TrainConfig(autoencoder=...)` (`python -m minidiff train --autoencoder RUN`) encodes the data
# once, then trains the very network of chapter 4 at the latent shape: 4 channels of 8x8. The
# schedule, the loss and the samplers do not know the difference. One setting does change:
# minidiff's network first reads 2x2 patches as channels (`patch=2`, chapter 3), which suits
# 16x16 pixels but would leave an 8x8 latent only 4x4 and 2x2 levels; every latent cell already
# stands for a 4x4 block of pixels, so `patch=1` keeps the 8x8 level (measured on this chapter's
# small run: loss 0.17 against 0.50 after 200 steps; `train --autoencoder` picks it by itself).
# The run records which autoencoder it used (and a fingerprint of its weights), so
# `minidiff.load` returns a pipeline whose `sample` decodes by itself:

# %%
LATENT_RUN = OUT / pick("latent_run", "latent_run_small")
if not (LATENT_RUN / "checkpoint.pt").is_file():
    train(TrainConfig(autoencoder=str(AE), image_size=32, n_images=ae_config.n_images,
                      n_feat=pick(32, 16), patch=1, batch_size=pick(128, 32),
                      steps=pick(1000, 150),
                      sample_every=0, checkpoint_every=0, progress=False, out=str(LATENT_RUN)))
pipe = minidiff.load(LATENT_RUN, device="cpu")
print(f"the network denoises {pipe.sample_shape}; sample returns images {pipe.image_shape}")
per_class = pick(6, 2)
images, frames = pipe.sample(5 * per_class, classes=pipe.classes, steps=25,
                             return_intermediates=True)
save_grid(images, OUT / "09_samples.png", nrow=5)
save_grid(frames[:, 0], OUT / "09_denoising.png")
print("saved", OUT / "09_samples.png", "(one column per class) and", OUT / "09_denoising.png",
      "(one sample's 25 DDIM steps: its latent beside the decoded image)")

# %% [markdown]
# Decoding random latents gives no sprites: the decoder only knows the latents of real images,
# and it is the diffusion model that finds its way to them. Decoded noise comes out as a washed
# out smudge that resembles no sprite. Measure how far each image lies from the nearest real
# sprite (the RMS pixel distance, `minidiff.evaluation.metrics.nearest_rms`, median over the
# batch): the samples should lie nearer the real sprites than decoded noise does. (An earlier
# version of this chapter compared the spread of pixel values, which decoded noise matched as
# well as the samples did at full size: a measure that could not tell them apart.)

# %%
noise = torch.randn(len(images), *pipe.sample_shape)
decoded_noise = pipe.decoder.decode(noise).clamp(-1, 1)
real = load_dataset(None, image_size=32, n=ae_config.n_images).images
distance = {name: float(nearest_rms(batch, real).median()) for name, batch in
            (("samples", images), ("decoded noise", decoded_noise))}
save_grid(decoded_noise, OUT / "09_decoded_noise.png", nrow=5)
print("median RMS distance to the nearest real sprite:",
      ", ".join(f"{k} {v:.3f}" for k, v in distance.items()), "; saved",
      OUT / "09_decoded_noise.png")
assert distance["samples"] < distance["decoded noise"], "the sampler should find sprite-like " \
    "latents"

# %% [markdown]
# ## The comparison at a fixed budget
# Is it worth it? `benchmarks/latent.py` gives both pipelines the same 15 CPU-minutes on real
# 32x32 emoji: the autoencoder and the latent model share them, the pixel model has them all.
# It reports the step-time ratio at batch 128, the autoencoder's PSNR, and the FID of each in
# the feature space of a classifier trained on the same data
# (`minidiff/evaluation/classifier.py`), with both sample grids. What it measured on 1,334
# Google emoji, scored on 572 held-out ones (benchmarks/RESULTS.md, "Latent against pixel
# diffusion"; floor 0.14, the autoencoder's reconstructions alone 0.15):
#
# | 15 CPU-minutes | diffusion steps | FID, guidance 1 | FID, guidance 2 | accuracy, guidance 2 |
# | --- | --- | --- | --- | --- |
# | pixels, 32x32 | 2,263 | 0.76 | 0.67 | 0.80 |
# | autoencoder (6,050 steps, 26.0 dB), then latents 8x8x4 | 3,890 | 0.70 | 0.44 | 0.87 |
#
# A latent step cost 3.4x less than a pixel step, not the 4.1x its FLOPs promise (small tensors
# pay fixed costs), and half the budget went to the autoencoder, yet the latent model still took
# 1.7 times the steps, and its samples score better at both scales (on Twitter's emoji too:
# 0.59 against 1.04, 0.46 against 0.77); by eye they are smooth where the pixel ones are
# speckled. Pixels, then latents, guidance 2, one column per class:
#
# ![pixel diffusion at 32x32](../docs/latent_emoji_pixel.png)
# ![latent diffusion](../docs/latent_emoji_latent.png)
