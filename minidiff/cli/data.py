"""`python -m minidiff data {preview,export}`: look at a dataset, or write the course's layout.

    python -m minidiff data preview --data sprites --out grid.png
    python -m minidiff data export --data my_images/ --out exported/

`export` writes what the course's notebooks load: `<name>_<S>x<S>.npy` (uint8 (N, S, S, 3)),
`<name>_labels_<S>x<S>.npy` (float64 one-hot (N, K), the course's dtype) and
`<name>_classes.json` ({"classes": [...]}), so any source minidiff reads can go back to the course;
`train --data OUT/<name>_<S>x<S>.npy` finds the labels and class names beside it, and `export`
prints that command. Outputs follow `minidiff.cli.outputs` (checked before loading, written
together, never over an input or, without --overwrite, over an earlier file).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from minidiff.cli import flags
from minidiff.cli.outputs import Output, check_outputs, probe_folder, write_together
from minidiff.data.datasets import Dataset, load_dataset
from minidiff.data.images import by_class, save_grid, to_uint8
from minidiff.data.limits import IMAGE_SIZE_STEP
from minidiff.utils.atomic import write_json, write_npy
from minidiff.utils.errors import MinidiffError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a file stem: no folders, not hidden


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", type=flags.choice(("preview", "export")),
                        metavar="{preview,export}",
                        help="preview: save a PNG grid, one column per class; export: write the "
                             ".npy layout")
    parser.add_argument("--data", default=None,
                        help="'sprites' (built-in, the default), a .npy file or an image folder")
    parser.add_argument("--labels", default=None, help="labels .npy (one-hot rows or indices)")
    parser.add_argument("--classes", default=None, help="class names 'a,b,c' or a .json file")
    parser.add_argument("--image-size", type=flags.integer(low=IMAGE_SIZE_STEP), default=16,
                        help="side in pixels (multiple of 4)")
    parser.add_argument("-n", "--n", type=flags.integer(low=1), default=None,
                        help="how many images (built-in: how many to draw; else a random subset; "
                             "default: all, 20,000 built-in)")
    parser.add_argument("--seed", type=flags.integer(low=0, high=2**32 - 1), default=0,
                        help="seed for drawing or subsetting")
    parser.add_argument("--out", required=True, help="preview: the PNG path; export: a folder")
    parser.add_argument("--per-class", type=flags.integer(low=1, high=256), default=8,
                        help="preview: images per class column")
    parser.add_argument("--name", default=None, help="export: file name stem (default: data's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that already exist")


def main(args: argparse.Namespace) -> int:
    inputs = [Path(p) for p in (args.data, args.labels, args.classes)
              if p and p != "sprites" and Path(p).exists()]
    if args.action == "preview":
        output = Output("--out", Path(args.out), "grid", chosen=True)
        check_outputs([output], inputs, args.overwrite)  # before loading: that may take long
    else:
        if args.name is not None:
            check_name(args.name)
        probe_folder(Path(args.out), "--out")  # the names need the data; the folder does not
    ds = load_dataset(args.data, labels=args.labels, classes=args.classes,
                      image_size=args.image_size, n=args.n, seed=args.seed)
    counts = ds.contexts.argmax(1).bincount(minlength=len(ds.classes)) if ds.classes else None
    summary = ", ".join(f"{c} {int(k)}" for c, k in zip(ds.classes, counts)) if ds.classes else \
        "unlabelled"
    side = ds.images.shape[-1]
    print(f"{ds.name}: {len(ds)} images of {side}x{side} ({summary})")
    if args.action == "preview":
        return _preview(ds, output, args.per_class)
    return _export(ds, Path(args.out), args.name or ds.name, inputs, args.overwrite)


def check_name(name: str) -> None:
    """An export name is a plain file stem: it cannot lead outside --out."""
    if not NAME.fullmatch(name) or ".." in name:
        raise MinidiffError(f"--name {name!r} must be a plain file name (letters, digits, '.', "
                            "'_', '-'; no folders): export writes only inside --out")


def _preview(ds: Dataset, output: Output, per_class: int) -> int:
    """One column per class (its first `per_class` images), or a grid when unlabelled."""
    if ds.classes:
        index = ds.contexts.argmax(1)
        picks = [to_uint8(ds.images[torch.nonzero(index == k).flatten()[:per_class]])
                 for k in range(len(ds.classes))]
        pixels, width = by_class(picks), len(ds.classes)
    else:
        pixels, width = to_uint8(ds.images[: per_class * per_class]), None
    write_together([(output.path, lambda tmp: save_grid(pixels, tmp, nrow=width))])
    print(f"wrote {output.path}" + (f": one column per class ({', '.join(ds.classes)})"
                                    if ds.classes else ""))
    return 0


def _export(ds: Dataset, out: Path, name: str, inputs, overwrite: bool) -> int:
    check_name(name)
    size = f"{ds.images.shape[-2]}x{ds.images.shape[-1]}"
    writes = [(Output("--out", out / f"{name}_{size}.npy", "npy", chosen=True),
               lambda tmp: write_npy(tmp, to_uint8(ds.images)))]
    if ds.classes:
        labels = ds.contexts.numpy().astype(np.float64)
        writes += [(Output("--out", out / f"{name}_labels_{size}.npy", "npy", chosen=True),
                    lambda tmp: write_npy(tmp, labels)),
                   (Output("--out", out / f"{name}_classes.json", "json", chosen=True),
                    lambda tmp: write_json(tmp, {"classes": ds.classes}))]
    outputs = [output for output, _ in writes]
    check_outputs(outputs, inputs, overwrite)
    if any(o.path.resolve().parent != out.resolve() for o in outputs):
        raise MinidiffError(f"export would write outside --out {out}")  # check_name forbids it
    write_together([(output.path, writer) for output, writer in writes])
    print("wrote " + ", ".join(str(o.path) for o in outputs))
    print(f"train on it: python -m minidiff train --data {outputs[0].path}"
          + (" (the labels and class names beside it are found)" if ds.classes else ""))
    return 0
