"""`python -m minidiff data {preview,export}`: look at a dataset, or write the course's layout.

    python -m minidiff data preview --data sprites --out grid.png
    python -m minidiff data export --data my_images/ --out exported/

`export` writes what the course's notebooks load: `<name>_<S>x<S>.npy` (uint8 (N, S, S, 3)),
`<name>_labels_<S>x<S>.npy` (float64 one-hot (N, K), the course's dtype) and
`<name>_classes.json` ({"classes": [...]}), so any source minidiff reads can go back to the course.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from minidiff.utils.atomic import atomic_path, write_json, write_npy
from minidiff.data.datasets import Dataset, load_dataset
from minidiff.data.images import grid, to_uint8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("preview", "export"),
                        help="preview: save a PNG grid, by class; export: write the .npy layout")
    parser.add_argument("--data", default=None,
                        help="'sprites' (built-in, the default), a .npy file or an image folder")
    parser.add_argument("--labels", default=None, help="labels .npy (one-hot rows or indices)")
    parser.add_argument("--classes", default=None, help="class names 'a,b,c' or a .json file")
    parser.add_argument("--image-size", type=int, default=16, help="side in pixels (multiple of 4)")
    parser.add_argument("-n", "--n", type=int, default=None,
                        help="how many images (built-in: how many to draw; else a random subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed for drawing or subsetting")
    parser.add_argument("--out", required=True, help="preview: the PNG path; export: a folder")
    parser.add_argument("--per-class", type=int, default=8, help="preview: images per class row")
    parser.add_argument("--name", default=None, help="export: file name stem (default: data's)")


def main(args: argparse.Namespace) -> int:
    ds = load_dataset(args.data, labels=args.labels, classes=args.classes,
                      image_size=args.image_size, n=args.n, seed=args.seed)
    counts = ds.contexts.argmax(1).bincount(minlength=len(ds.classes)) if ds.classes else None
    summary = ", ".join(f"{c} {int(k)}" for c, k in zip(ds.classes, counts)) if ds.classes else \
        "unlabelled"
    side = ds.images.shape[-1]
    print(f"{ds.name}: {len(ds)} images of {side}x{side} ({summary})")
    if args.action == "preview":
        return _preview(ds, args.out, args.per_class)
    return _export(ds, args.out, args.name or ds.name)


def _preview(ds: Dataset, out: str, per_class: int) -> int:
    """One row per class (the first `per_class` of each), or a square grid when unlabelled."""
    if ds.classes:
        index = ds.contexts.argmax(1)
        rows = [torch.nonzero(index == k).flatten()[:per_class] for k in range(len(ds.classes))]
        pick = [ds.images[r] for r in rows]
        pixels = np.concatenate([_pad_row(to_uint8(p), per_class) for p in pick])
        nrow = per_class
    else:
        pixels, nrow = to_uint8(ds.images[: per_class * per_class]), None
    with atomic_path(out) as tmp:
        Image.fromarray(grid(pixels, nrow=nrow, scale=4)).save(tmp, format="PNG")
    print(f"wrote {out}")
    return 0


def _pad_row(pixels: np.ndarray, width: int) -> np.ndarray:
    """Fill a class row that has fewer than `width` images with white squares."""
    blank = np.full((width - len(pixels), *pixels.shape[1:]), 255, np.uint8)
    return np.concatenate([pixels, blank])


def _export(ds: Dataset, out: str, name: str) -> int:
    size = f"{ds.images.shape[-2]}x{ds.images.shape[-1]}"
    written = [f"{out}/{name}_{size}.npy"]
    write_npy(written[0], to_uint8(ds.images))
    if ds.classes:
        written.append(f"{out}/{name}_labels_{size}.npy")
        write_npy(written[1], ds.contexts.numpy().astype(np.float64))
        written.append(f"{out}/{name}_classes.json")
        write_json(written[2], {"classes": ds.classes})
    print("wrote " + ", ".join(written))
    return 0
