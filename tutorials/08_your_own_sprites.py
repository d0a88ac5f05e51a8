# %% [markdown]
# # Chapter 8 — Your own sprites
#
# **You will learn**
# - the two ways to hand minidiff your own images: a folder (one subfolder per class, or none),
#   and the course's `.npy` files (uint8 images plus one-hot labels);
# - what happens to images that are not 16x16 or not square (padded with white, then
#   area-averaged), and to transparency (composited on white, like the course's sprites);
# - how to go from a folder to the course's `.npy` layout and back;
# - how to train on your data (`TrainConfig(data=...)` or `python -m minidiff train --data ...`),
#   sample by your class names, and check that a model trained on few images is not simply
#   copying them.
#
# **Code this chapter explains:** `minidiff/data/datasets.py` (`load_dataset`, `Dataset`) and its
# readers, `minidiff/data/npy.py` (the course's files), `minidiff/data/folders.py` (image
# folders), `minidiff/data/resize.py` (pad and area-average) and `minidiff/data/limits.py` (the
# bounds on untrusted input), the data command `minidiff/cli/data.py` (`python -m minidiff data
# preview|export`), the trainer `minidiff/training/config.py`, and the memorisation check in
# `minidiff/evaluation/metrics.py` (`nearest_rms`, `memorisation`). Tests:
# `tests/data/test_datasets.py`.
#
# "Your" images are drawn here, on the fly, into OUT: a few hundred coins, gems and potions,
# 40x48 pixels with transparent backgrounds. Put your own folder in their place. At full size
# the chapter trains for a minute or two.

# %%
import json
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

import minidiff
from minidiff.data.datasets import load_dataset
from minidiff.data.images import by_class, grid, save_grid, to_uint8
from minidiff.evaluation.metrics import NEAR_COPY_RMS, memorisation, nearest_rms
from minidiff.training import TrainConfig, train

from _tutorial import OUT, SMALL, pick

if SMALL:  # tiny tensors: on a busy 2-core machine a second thread only waits (see _trained.py)
    torch.set_num_threads(1)

# %% [markdown]
# ## A folder of images
# Three classes, one subfolder each. Each image is 40 pixels wide and 48 high, RGBA with a
# transparent background; sizes, positions and colours vary.

# %%
WIDTH, HEIGHT = 40, 48


def draw(kind: str, rng: np.random.Generator) -> Image.Image:
    """One RGBA picture of a coin, a gem or a potion, transparent around it."""
    image = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(10, 17))  # half-size
    cx, cy = WIDTH // 2 + int(rng.integers(-4, 5)), HEIGHT // 2 + int(rng.integers(-6, 7))
    colour = tuple(int(v) for v in rng.integers(40, 256, 3)) + (255,)
    outline = (30, 20, 40, 255)
    if kind == "coin":
        gold = (int(rng.integers(200, 256)), int(rng.integers(150, 210)), 30, 255)
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=gold, outline=outline, width=2)
        pen.ellipse([cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2], outline=outline)
    elif kind == "gem":
        points = [(cx, cy - r), (cx + r, cy - r // 3), (cx, cy + r), (cx - r, cy - r // 3)]
        pen.polygon(points, fill=colour, outline=outline, width=2)
        pen.line([(cx - r, cy - r // 3), (cx + r, cy - r // 3)], fill=outline)
    else:  # a potion: a round flask with a neck and a cork
        pen.ellipse([cx - r, cy - r // 2, cx + r, cy + 3 * r // 2], fill=colour, outline=outline,
                    width=2)
        pen.rectangle([cx - 3, cy - r, cx + 3, cy - r // 2], fill=(200, 220, 230, 255),
                      outline=outline)
        pen.rectangle([cx - 3, cy - r - 4, cx + 3, cy - r], fill=(150, 100, 60, 255))
    return image


folder = OUT / "my_sprites"
rng = np.random.default_rng(0)
per_class = pick(300, 24)
for kind in ("coin", "gem", "potion"):
    (folder / kind).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        draw(kind, rng).save(folder / kind / f"{i:04d}.png")
print(f"wrote {3 * per_class} PNGs of {WIDTH}x{HEIGHT} under {folder}/coin, gem, potion")

# %% [markdown]
# `load_dataset` reads the folder: class names from the subfolders (in sorted order, which is
# the order of the one-hot context), transparency onto white, each image padded with white to
# a 48x48 square, then shrunk to 16x16 by averaging the pixels each output pixel covers.
# The result is the course's tensor layout: float32 (N, 3, 16, 16) in [-1, 1].

# %%
dataset = load_dataset(str(folder), image_size=16)
print(f"{dataset.name}: {len(dataset)} images {tuple(dataset.images.shape[1:])}, "
      f"pixel range [{dataset.images.min():.0f}, {dataset.images.max():.0f}], "
      f"classes {dataset.classes}, contexts {tuple(dataset.contexts.shape)}")
first = [folder / kind / "0000.png" for kind in dataset.classes]
originals = []
for path in first:  # the originals on white, for comparison, padded to 48x48
    square = Image.new("RGBA", (HEIGHT, HEIGHT), "white")
    square.alpha_composite(Image.open(path), ((HEIGHT - WIDTH) // 2, 0))
    originals.append(np.asarray(square.convert("RGB")))
index = [int(torch.nonzero(dataset.contexts.argmax(1) == k)[0]) for k in range(3)]
small = to_uint8(dataset.images[index]).repeat(3, axis=1).repeat(3, axis=2)  # 16 -> 48 to compare
Image.fromarray(grid(np.concatenate([np.stack(originals), small]), nrow=3, scale=3)).save(
    OUT / "08_resize.png")
print("saved", OUT / "08_resize.png", "(top: the originals on white; bottom: what the model sees)")
corners = dataset.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # transparent in every original
assert dataset.images.shape[1:] == (3, 16, 16) and torch.allclose(corners, torch.ones(()))
print("every image is 3 x 16 x 16, and its transparent corners came out white (1.0): checked")

# %% [markdown]
# ## The course's `.npy` layout, both ways
# The course's notebooks load `sprites_1788_16x16.npy` (uint8, (N, 16, 16, 3)) and
# `sprite_labels_nc_1788_16x16.npy` (float64 one-hot, (N, 5)). `python -m minidiff data export`
# writes any dataset minidiff can read in that layout, with the class names beside it:

# %%
exported = OUT / "exported"
command = [sys.executable, "-m", "minidiff", "data", "export", "--data", str(folder),
           "--out", str(exported)]
print("$ python -m minidiff data export --data", folder, "--out", exported)
print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())
images_npy = np.load(exported / "my_sprites_16x16.npy")
labels_npy = np.load(exported / "my_sprites_labels_16x16.npy")
names = json.loads((exported / "my_sprites_classes.json").read_text())["classes"]
print(f"images {images_npy.dtype} {images_npy.shape}, labels {labels_npy.dtype} "
      f"{labels_npy.shape}, class names {names}")

# %% [markdown]
# And back: a `.npy` file finds its labels and class names when they sit beside it with those
# names. Files named like the course's (the labels file has another stem) need `labels=` (or
# `--labels`), and names with `classes=`, else the classes are called class0, class1, ... Both
# give back exactly the images of the folder.

# %%
from_npy = load_dataset(str(exported / "my_sprites_16x16.npy"))
course_dir = OUT / "course_layout"
course_dir.mkdir(exist_ok=True)
n = len(images_npy)
np.save(course_dir / f"sprites_{n}_16x16.npy", images_npy)
np.save(course_dir / f"sprite_labels_nc_{n}_16x16.npy", labels_npy)
from_course = load_dataset(str(course_dir / f"sprites_{n}_16x16.npy"),
                           labels=str(course_dir / f"sprite_labels_nc_{n}_16x16.npy"),
                           classes="coin,gem,potion")
for name, other in (("exported", from_npy), ("course-named", from_course)):
    same = torch.equal(other.images, dataset.images) and torch.equal(other.contexts,
                                                                      dataset.contexts)
    print(f"{name:12} .npy: {len(other)} images, classes {other.classes}, same as the folder: "
          f"{same}")
    assert same

# %% [markdown]
# ## Train on them
# The same trainer as chapter 4, pointed at the folder. From the shell it is
#
#     python -m minidiff train --data OUT/my_sprites --steps 2500 --batch-size 64 --n-feat 32
#
# and from Python the same fields in a `TrainConfig`. Simple pictures and few of them: a network
# half the default width will do. On 2 CPU cores this takes a minute or two.

# %%
config = TrainConfig(data=str(folder), n_feat=pick(32, 8), batch_size=pick(64, 16),
                     steps=pick(2500, 10), sample_every=0, checkpoint_every=0, progress=False,
                     log_every=pick(50, 5), out=str(OUT / "my_run"))
start = time.perf_counter()
train(config)
print(f"trained in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# Sample it by class name, like chapter 5, and put a row of real images under each class for
# comparison.

# %%
pipe = minidiff.load(OUT / "my_run", device="cpu")
k = pick(8, 2)
labels = dataset.contexts.argmax(1)
rows = []
for c, name in enumerate(pipe.classes):
    rows.append(pipe.sample(k, classes=name, seed=0))
    rows.append(dataset.images[torch.nonzero(labels == c).flatten()[:k]])
save_grid(by_class(rows), OUT / "08_samples.png", nrow=len(rows))
print("saved", OUT / "08_samples.png", "(columns in pairs, samples then real:",
      ", ".join(pipe.classes) + ")")

# %% [markdown]
# ## Is it copying?
# With a few hundred images a network can learn them by heart. `minidiff/evaluation/metrics.py`
# calls a sample a near copy when some training image is within 8/255 root-mean-square of it, and
# compares with the same rate among real images (real data has near-duplicates of its own):
# only a rate well above that base rate suggests memorisation.

# %%
samples = pipe.sample(pick(300, 12), classes=list(pipe.classes), seed=1)
order = torch.from_numpy(np.random.default_rng(0).permutation(len(dataset)))
held, rest = order[: len(order) // 10], order[len(order) // 10 :]
base_rate = memorisation(dataset.images[held], dataset.images[rest])
print(f"near copies among samples: {memorisation(samples, dataset.images):.1%};  among real "
      f"images (a tenth against the rest): {base_rate:.1%}")
assert memorisation(dataset.images[:20], dataset.images) == 1.0  # a copy is always caught
distance = nearest_rms(samples, dataset.images)
print(f"distance to the nearest training image: median {distance.median():.3f}, smallest "
      f"{distance.min():.3f} (near-copy threshold {NEAR_COPY_RMS:.3f}, in [-1, 1] units)")

# %% [markdown]
# (The check in the code above feeds the measure 20 training images themselves: it calls every
# one a near copy, so a network that copied could not hide.)
#
# On the run above, compare the two rates: a sample rate far above the real one would mean the
# network reproduces its training images rather than drawing new ones; then train on more
# images, for fewer steps, or with a narrower network.
#
# That is the end of the tutorials. `python -m minidiff --help` lists the commands; the
# README's "What is where" table lists the code.
