"""Texture floors: patch SWD and the high-frequency ratio of real images against real images, and
how the two respond to blur and to noise (issue 23). Not a timing benchmark.

    python benchmarks/texture_floors.py                        # --data ../shared/data
    python benchmarks/texture_floors.py --data DIR --size 32

Each image set is split into two seeded halves A and B, as the eval floor is
(`minidiff.evaluation.metrics.evaluate`). One row per set: the floor SWD(B, A) (x 1e3, at the
default `N_PATCHES` and, to show what more patches buy, at 2^16), the class-mix-weighted per-class
floor, SWD(blur(B), A) for a 2x2 box blur, SWD(B + noise, A) for Gaussian noise of sigma 0.02,
0.05 and 0.1 in [-1, 1] units (2.6, 6.4 and 12.8 grey levels), then the same for the
high-frequency ratio. The sets: emoji_google, emoji_twitter and rltiles_items from --data (those
missing are skipped) and the built-in sprites. Results: benchmarks/RESULTS.md, "Texture floors".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from minidiff.data.datasets import Dataset, load_dataset
from minidiff.evaluation.texture import (
    add_noise,
    box_blur,
    class_swd,
    hf_ratio,
    mix_weighted,
    patch_swd,
)

SETS = {  # name: (class names beside the images, or None: found by `load_dataset`)
    "emoji_google": "emoji_classes.json",
    "emoji_twitter": "emoji_classes.json",
    "rltiles_items": None,
}
SIGMAS = (0.02, 0.05, 0.1)  # noise, in [-1, 1] units
MORE_PATCHES = 2**16


def halves(dataset: Dataset, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Two disjoint seeded halves (A, B) of the data, as the eval floor draws them."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(dataset)))
    m = len(dataset) // 2
    return tuple(Dataset(dataset.images[rows], dataset.contexts[rows], dataset.classes,
                         dataset.name) for rows in (order[:m], order[m:2 * m]))


def responses(dataset: Dataset, seed: int = 0, more_patches: int = MORE_PATCHES) -> dict:
    """The floors and the blur and noise responses of one set (the module docstring)."""
    a, b = halves(dataset, seed)
    labels_a, labels_b = a.contexts.argmax(1), b.contexts.argmax(1)
    noisy = {sigma: add_noise(b.images, sigma, seed) for sigma in SIGMAS}
    per_class = class_swd(b.images, labels_b, a.images, labels_a, dataset.classes)
    return {
        "dataset": dataset.name, "n_half": len(a),
        "swd_floor": patch_swd(b.images, a.images),
        "swd_floor_more_patches": patch_swd(b.images, a.images, n_patches=more_patches),
        "swd_class_floor": mix_weighted(per_class, labels_b),
        "swd_blur": patch_swd(box_blur(b.images), a.images),
        **{f"swd_noise_{sigma:g}": patch_swd(noisy[sigma], a.images) for sigma in SIGMAS},
        "hf_ratio_floor": hf_ratio(b.images, a.images),
        "hf_ratio_blur": hf_ratio(box_blur(b.images), a.images),
        **{f"hf_ratio_noise_{sigma:g}": hf_ratio(noisy[sigma], a.images) for sigma in SIGMAS},
    }


def datasets(folder: Path, size: int, n_sprites: int) -> list[Dataset]:
    """The sets of `SETS` found in `folder` at `size`, then the built-in sprites."""
    found = []
    for name, classes in SETS.items():
        images = folder / f"{name}_{size}x{size}.npy"
        if images.exists():
            found.append(load_dataset(str(images), str(folder / f"{name}_labels_{size}x{size}.npy"),
                                      str(folder / classes) if classes else None,
                                      image_size=size))
    return [*found, load_dataset("sprites", image_size=size, n=n_sprites)]


def table(rows: list[dict]) -> str:
    """The Markdown table for benchmarks/RESULTS.md."""
    noise = " | ".join(f"noise {s:g}" for s in SIGMAS)
    lines = [f"| data | images per half | SWD floor (2^16 patches) | per class | blur 2x2 | "
             f"{noise} | HF ratio floor | blur 2x2 | {noise} |",
             "| --- " * (7 + 2 * len(SIGMAS)) + "|"]
    for r in rows:
        swd_noise = " | ".join(f"{r[f'swd_noise_{s:g}']:.1f}" for s in SIGMAS)
        hf_noise = " | ".join(f"{r[f'hf_ratio_noise_{s:g}']:.2f}" for s in SIGMAS)
        lines.append(f"| {r['dataset']} | {r['n_half']:,} | {r['swd_floor']:.1f} "
                     f"({r['swd_floor_more_patches']:.1f}) | {r['swd_class_floor']:.1f} | "
                     f"{r['swd_blur']:.1f} | {swd_noise} | {r['hf_ratio_floor']:.3f} | "
                     f"{r['hf_ratio_blur']:.2f} | {hf_noise} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="folder of the real image sets "
                        "(default ../shared/data; sets not there are skipped)")
    parser.add_argument("--size", type=int, default=16, help="image side: 16 or 32")
    parser.add_argument("--n-sprites", type=int, default=2000, help="built-in sprites to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the halves and the noise")
    parser.add_argument("--more-patches", type=int, default=MORE_PATCHES,
                        help="patches per set of the floor's second column")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [responses(dataset, args.seed, args.more_patches)
            for dataset in datasets(Path(args.data), args.size, args.n_sprites)]
    print(table(rows), end="")
    return rows


if __name__ == "__main__":
    main()
