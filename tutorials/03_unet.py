# %% [markdown]
# # Chapter 3 — The UNet: what predicts the noise
#
# **You will learn**
# - how the course's ContextUnet is built: an encoder that halves the picture twice, a
#   bottleneck that squeezes it to one vector, a decoder that grows it back, and the skip
#   connections that hand the encoder's detail across;
# - exactly where the time t / T and the context c enter (`cemb * up + temb`), checked on real
#   tensors rather than taken on trust;
# - the shape of every tensor on the way through, printed by forward hooks;
# - how minidiff's default "minidiff" architecture differs, and what both cost in parameters and
#   time.
#
# **Code this chapter explains:** `minidiff/unet.py`: `UnetConfig`, `build_unet`, `UnetBase` (what
# both networks share), the course's `ContextUnet` with its blocks `ResidualConvBlock`, `UnetDown`,
# `UnetUp`, `EmbedFC`, and minidiff's `MinidiffUnet` with its `ResBlock`. Tests:
# `tests/test_unet.py`. The
# network is untrained here; chapter 4 trains it.

# %%
import inspect
import time

import numpy as np
import torch
from PIL import Image

from minidiff.data.images import grid, to_uint8
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.unet import ContextUnet, UnetConfig, build_unet

from _tutorial import OUT, SMALL, pick

torch.manual_seed(0)
if SMALL:  # tiny tensors: on a busy 2-core machine a second thread only waits (see _trained.py)
    torch.set_num_threads(1)

# %% [markdown]
# ## The job
# The network eps_theta(x_t, t / T, c) gets a noisy sprite x_t, the timestep as a number in
# [0, 1] and a context vector (one-hot class, or zeros for "no class"), and returns its guess of
# the noise in x_t: a tensor of x_t's own shape. Here is the course's network at the course's
# size (n_feat = 64, n_cfeat = 5, height = 16).

# %%
course = build_unet(UnetConfig(arch="course", n_feat=64, n_cfeat=5, height=16)).eval()
images, labels = make_sprites(n=pick(8, 4), seed=0)
x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, 16, 16) in [-1, 1]
t = torch.full((len(x),), 300 / 500)  # t / T, one per image
c = torch.eye(len(CLASSES))[torch.from_numpy(labels)]  # one-hot classes, (B, 5)
with torch.no_grad():
    eps_theta = course(x, t, c)
print("x:", tuple(x.shape), " t / T:", tuple(t.shape), " c:", tuple(c.shape),
      " -> eps_theta:", tuple(eps_theta.shape))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


print(f"parameters: {n_params(course):,}")

# %% [markdown]
# ## Shapes at every stage
# A forward hook is a function PyTorch calls after a module runs, with its inputs and output. We
# hang one on every top-level block and print, in the order they run, what went in and what came
# out. B is the batch size; 64 is n_feat.

# %%
def trace(model: torch.nn.Module, *args) -> dict[str, tuple]:
    """Run model(*args) and return {block name: (inputs, output)} in call order."""
    seen, handles = {}, []
    for name, block in model.named_children():
        hook = lambda mod, inputs, output, name=name: seen.__setitem__(name, (inputs, output))
        handles.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def print_trace(seen: dict[str, tuple]) -> None:
    for name, (inputs, output) in seen.items():
        shapes = " + ".join(str(tuple(a.shape)) for a in inputs if isinstance(a, torch.Tensor))
        print(f"  {name:14} {shapes:34} -> {tuple(output.shape)}")


seen = trace(course, x, t, c)
print_trace(seen)

# %% [markdown]
# Read it as a U:
# - **encoder**: `init_conv` lifts 3 colour channels to 64 feature channels at 16x16; `down1`
#   (two residual blocks, then max-pool) gives 64 x 8x8, `down2` gives 128 x 4x4;
# - **bottleneck**: `to_vec` averages each 4x4 map to one number: a (B, 128, 1, 1) vector, the
#   whole sprite summarised; `up0` (a transposed convolution) spreads it back to 4x4;
# - **decoder**: `up1` and `up2` each double the resolution; their inputs are *two* tensors,
#   the decoder's and the encoder's at the same size (the skip connections `down2` and `down1`);
# - **head**: `out` sees the last decoder map next to `init_conv`'s output (64 + 64 = 128
#   channels) and returns 3 channels, the noise estimate.
#
# The embeddings `timeembed1/2` and `contextembed1/2` are small MLPs (`EmbedFC`: Linear, GELU,
# Linear) from the 1-number time and the 5-number context to 128 and 64 numbers, shaped
# (B, C, 1, 1) so that they broadcast over a feature map.
#
# ## Where time and context enter
# Here is the forward pass, straight from `minidiff/unet.py`:

# %%
print(inspect.getsource(ContextUnet.forward))

# %% [markdown]
# The time and context touch the network in exactly two places, both in the decoder:
# `cemb1 * up1 + temb1` at 4x4 and `cemb2 * up2 + temb2` at 8x8. The context *scales* every
# channel, the time *shifts* it. Let us check that `up1` really received that product, using the
# tensors the hooks caught.

# %%
cemb1 = seen["contextembed1"][1]  # (B, 128, 1, 1)
temb1 = seen["timeembed1"][1]  # (B, 128, 1, 1)
up0_out = seen["up0"][1]  # (B, 128, 4, 4)
up1_in, skip = seen["up1"][0]  # what UnetUp.forward(x, skip) received
print("cemb1", tuple(cemb1.shape), "* up0", tuple(up0_out.shape), "+ temb1", tuple(temb1.shape),
      "->", tuple(up1_in.shape), "; skip", tuple(skip.shape))
assert torch.allclose(up1_in, cemb1 * up0_out + temb1)
assert torch.equal(skip, seen["down2"][1])  # the skip is down2's output itself
print("up1's input is cemb1 * up0 + temb1, and its skip is down2's output: checked")

# %% [markdown]
# Three consequences worth knowing:
# - the encoder never sees t or c: it describes the noisy picture as it is, and the decoder
#   decides what to do with that description given the time and the class;
# - `c=None` means the zero vector (the "null" context the trainer uses 10% of the time), but
#   its embedding is not zero: the MLPs have biases, so "no class" is a learned vector of its
#   own;
# - at the bottleneck every spatial detail is gone; what survives to the output came through
#   the skips.

# %%
with torch.no_grad():
    null = course(x, t)  # c=None
    zeros = course(x, t, torch.zeros_like(c))
    null_embedding = course.contextembed1(torch.zeros(1, len(CLASSES)))
assert torch.equal(null, zeros)
print("c=None gives the zero context: checked;  |contextembed1(0)| =",
      f"{null_embedding.norm():.3f} (not zero)")

# %% [markdown]
# ## The U as pictures
# Averaging each stage's feature channels gives one grey map per stage. Drawn at the same size,
# the resolution falls 16 -> 8 -> 4 -> 1 and climbs back. The network is untrained, so the maps
# are only filtered versions of the sprite; the shapes are the point.

# %%
stages = ["init_conv", "down1", "down2", "to_vec", "up0", "up1", "up2", "out"]
maps = [x[:1].mean(1)] + [seen[name][1][:1].float().mean(1) for name in stages]  # (1, h, w) each
tiles = []
for m in maps:
    spread = m.max() - m.min()
    m = (m - m.min()) / spread if spread > 0 else torch.full_like(m, 0.5)  # min-max per map
    factor = 16 // m.shape[-1]
    big = m.repeat_interleave(factor, -1).repeat_interleave(factor, -2)  # nearest, to 16x16
    tiles.append((big[0].numpy() * 255).round().astype(np.uint8))
tiles = np.stack(tiles)[..., None].repeat(3, axis=-1)  # (9, 16, 16, 3), grey
sprite = to_uint8(x[:1])  # the input in colour, first
Image.fromarray(grid(np.concatenate([sprite, tiles]), nrow=10, scale=8)).save(OUT / "03_stages.png")
print("saved", OUT / "03_stages.png", "(the input, its channel mean, then", ", ".join(stages) + ")")

# %% [markdown]
# ## One departure from the course
# When a residual block changes the channel count (3 -> 64 in `init_conv`), the course's
# notebook creates a new 1x1 convolution *inside* `forward`, so that path is random and
# untrained on every call. minidiff registers it as `shortcut`, a module trained and saved like
# any other; it costs 3 * 64 + 64 parameters, which is why the count above is a little over the
# course's "about 1.48 M". `tests/test_unet.py` pins both numbers.

# %%
print(inspect.getsource(type(course.init_conv).forward))
shortcut = n_params(course.init_conv.shortcut)
print(f"shortcut: {shortcut} parameters; the course's network without it: "
      f"{n_params(course) - shortcut:,}")
assert shortcut == 3 * 64 + 64 and n_params(course) - shortcut == 1_480_771  # the course's count
with torch.no_grad():
    assert torch.equal(course(x, t, c), course(x, t, c))  # the same input, the same answer

# %% [markdown]
# ## minidiff's architecture
# The default `arch="minidiff"` keeps the U but changes what is cheap and steady on a CPU
# (`minidiff/unet.py` gives the reasons above `ResBlock`): the image is cut into 2x2 patches
# stacked as channels (16x16x3 becomes 8x8x12), one residual block per level with GroupNorm instead
# of BatchNorm, sinusoidal time features, a 4x4 middle block instead of the 1x1 vector, and time and
# context added together into one embedding that scales and shifts every block ("FiLM"), not only
# two decoder stages. Its trace:

# %%
fast = build_unet(UnetConfig(arch="minidiff", n_feat=64)).eval()
print_trace(trace(fast, x, t, c))
print(inspect.getsource(type(fast.down1).forward))

# %% [markdown]
# In the trace, `init_conv` receives 12 channels at 8x8 (the 2x2 patches) and `out` returns 12
# channels that are folded back to 3 x 16x16; every `ResBlock` takes the (B, 256) embedding as a
# second input, and `film` turns it into the per-channel `scale` and `shift` printed above. The
# course's `cemb * up + temb` is the same idea used twice: the context as a scale, the time as a
# shift.

# %% [markdown]
# ## Parameters and time, both architectures
# Parameter counts per block at the course's size, and the time of one forward pass on this
# machine's CPU (no gradients).

# %%
def forward_ms(model: torch.nn.Module, batch: int, repeats: int) -> float:
    xb, tb, cb = torch.randn(batch, 3, 16, 16), torch.rand(batch), torch.eye(5)[:1].expand(batch, 5)
    with torch.no_grad():
        model(xb, tb, cb)  # warm up
        start = time.perf_counter()
        for _ in range(repeats):
            model(xb, tb, cb)
    return (time.perf_counter() - start) / repeats * 1e3


PARTS = {  # which top-level blocks make up each part of the U
    "course": {"encoder": ["init_conv", "down1", "down2"], "bottleneck": ["to_vec", "up0"],
               "decoder": ["up1", "up2", "out"],
               "embeddings": ["timeembed1", "timeembed2", "contextembed1", "contextembed2"]},
    "minidiff": {"encoder": ["init_conv", "down1", "down2"], "bottleneck": ["mid"],
                 "decoder": ["up1", "up2", "out"], "embeddings": ["time_mlp", "context_mlp"]},
}
batch, repeats = pick(100, 8), pick(10, 2)
for name, model in (("course", course), ("minidiff", fast)):
    total = n_params(model)
    split = {part: sum(n_params(getattr(model, b)) for b in blocks)
             for part, blocks in PARTS[name].items()}
    assert sum(split.values()) == total  # every parameter belongs to one part
    shares = ", ".join(f"{part} {count / total:.0%}" for part, count in split.items())
    print(f"{name}: {total:,} parameters: {shares}")
    print(f"  forward pass, batch {batch}: {forward_ms(model, batch, repeats):.1f} ms on CPU, "
          f"{torch.get_num_threads()} threads")
    with torch.no_grad():  # both answer in x's own shape: a noise estimate per pixel
        assert model(x, t, c).shape == x.shape

# %% [markdown]
# Read the split above: where each network spends its weights. The minidiff network runs its
# convolutions on 8x8 patches instead of 16x16 pixels (a quarter of the positions) and has one
# block per level instead of two; compare the two times printed above. Which architecture
# *learns* faster per second of training is a question for chapter 4.
#
# **Next:** chapter 4 trains this network to predict the noise.
