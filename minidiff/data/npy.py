"""Reading the course's `.npy` files: uint8 images (N, H, W, 3) on white, labels beside them.

The labels are a second `.npy`: one-hot rows of any numeric dtype, or integer class indices.
Without `labels`, the course's sibling name `<name>_labels_<H>x<W>.npy` is used when it exists.
A row that is not exactly one 1 and zeros (a NaN, an inf, a soft label like [0.5, 0.5]) is
refused with its row number: minidiff trains on hard labels, as the course does; mixing classes
is a sampling-time choice (`sample --mix`).

Every file is untrusted: its header must describe exactly the bytes it holds (a header claiming
10^12 images is refused without reading on), it must hold numbers, not pickled objects, and the
images are memory-mapped so that only those kept (`subset`) are read, a chunk at a time.

Tutorial: tutorials/08_your_own_sprites.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from minidiff.data.limits import MAX_CLASSES, check_memory
from minidiff.data.resize import shrink
from minidiff.utils.errors import MinidiffError


def load_npy(path: Path, labels: str | None, image_size: int, n: int | None, seed: int):
    """uint8 (n, S, S, 3) images, float32 one-hot labels (n, K) or (n, 0), and [] class names."""
    pixels = _read_npy(path, "data")  # memory-mapped: nothing read yet
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        hint = " (channels first? transpose to (N, H, W, 3))" if pixels.ndim == 4 and pixels.shape[
            1] == 3 else ""
        raise MinidiffError(f"{path.name} has shape {pixels.shape}; expected uint8 (N, H, W, 3), "
                            f"the course's layout{hint}")
    if pixels.dtype != np.uint8:
        raise MinidiffError(f"{path.name} has dtype {pixels.dtype}; expected uint8 pixels 0..255 "
                            f"(convert with (x * 255).round().astype(np.uint8))")
    if len(pixels) == 0:
        raise MinidiffError(f"{path.name} holds no images")
    check_memory(min(n or len(pixels), len(pixels)), image_size, path.name)
    onehot = _load_labels(path, labels, len(pixels))
    pixels, onehot = subset(pixels, onehot, n, seed)  # only the images kept are read
    return shrink(pixels, image_size, path.name), onehot, []

def subset(pixels: np.ndarray, onehot: np.ndarray, n: int | None, seed: int):
    """`n` images and their labels drawn by `seed`, kept in file order (all when n is None)."""
    if n is None or n >= len(pixels):
        return pixels, onehot
    keep = np.sort(np.random.default_rng(seed).permutation(len(pixels))[:n])
    return pixels[keep], onehot[keep]


# The first bytes of files people pass by mistake: what each one is, and what to do instead.
_SIGNATURES = {b"PK": "a zip archive (a .npz?), not a .npy array; load it with numpy.load and "
                      "numpy.save the one array of images",
               b"\x89PNG": "a PNG image, not a .npy array; pass the folder that holds the images",
               b"\xff\xd8\xff": "a JPEG image, not a .npy array; pass the folder that holds the "
                                "images",
               b"GIF8": "a GIF image, not a .npy array; pass the folder that holds the images",
               b"\x80": "a Python pickle, not a .npy array; save arrays with numpy.save"}


def _read_npy(path: Path, what: str) -> np.ndarray:
    """A .npy file memory-mapped after checking that its header describes the bytes it holds."""
    where = f"{what} {str(path)!r}"
    with open(path, "rb") as file:
        head = file.read(8)
        if not head.startswith(b"\x93NUMPY"):
            kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)),
                        "not a .npy array; save arrays with numpy.save")
            raise MinidiffError(f"cannot read {where}: it is {kind}")
        try:
            file.seek(0)
            version = np.lib.format.read_magic(file)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(file)
        except (ValueError, OSError, EOFError, SyntaxError) as error:
            raise MinidiffError(f"cannot read {where} as a .npy array (bad header: "
                                f"{str(error).splitlines()[0][:80]}); save it with numpy.save"
                                ) from None
        if dtype.hasobject:
            raise MinidiffError(f"cannot read {where}: it holds Python objects, not numbers; "
                                f"save a numeric array with numpy.save")
        need, have = math.prod(shape) * dtype.itemsize, Path(path).stat().st_size - file.tell()
    if need != have:
        raise MinidiffError(f"cannot read {where}: its header says shape {shape} {dtype} "
                            f"({need} bytes) but the file holds {have}; it is truncated or "
                            f"damaged, save it again with numpy.save")
    if need == 0:
        return np.zeros(shape, dtype)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _load_labels(path: Path, labels: str | None, count: int) -> np.ndarray:
    if labels is None:
        head, _, size = path.stem.rpartition("_")
        sibling = path.with_name(f"{head}_labels_{size}.npy")
        if not head or not sibling.is_file():
            return np.zeros((count, 0), np.float32)
        labels = str(sibling)
    if not Path(labels).is_file():
        raise MinidiffError(f"labels {labels!r} does not exist; pass the labels .npy file")
    values = _read_npy(Path(labels), "labels")
    name = Path(labels).name
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise MinidiffError(f"labels {name} have dtype {values.dtype}; expected "
                            f"numbers (one-hot rows or class indices)")
    if values.ndim not in (1, 2) or len(values) != count:
        raise MinidiffError(f"labels {name} have shape {values.shape} for {count} "
                            f"images; expected ({count}, n_classes) one-hot or ({count},) indices")
    if values.ndim == 2:
        return _one_hot_rows(np.array(values), name)
    values = np.array(values)
    if not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        raise MinidiffError(f"labels {name} are 1-D but not class indices >= 0; "
                            f"pass integers 0..K-1 or one-hot rows")
    if values.max() >= MAX_CLASSES:
        raise MinidiffError(f"labels {name} hold class index {values.max()}, which would make "
                            f"{int(values.max()) + 1} classes (at most {MAX_CLASSES}); pass class "
                            f"indices 0..K-1")
    return np.eye(int(values.max()) + 1, dtype=np.float32)[values]


def _one_hot_rows(values: np.ndarray, name: str) -> np.ndarray:
    """(N, K) labels as float32, refusing any row that is not exactly one 1 among zeros."""
    if values.shape[1] > MAX_CLASSES:
        raise MinidiffError(f"labels {name} have {values.shape[1]} columns, over {MAX_CLASSES} "
                            f"classes; pass one-hot rows, one column per class")
    rows = values.astype(np.float64)
    bad = ~(np.isin(rows, (0.0, 1.0)).all(1) & (rows.sum(1) == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "NaN or inf" if not np.isfinite(rows[i]).all() else "not one-hot"
        raise MinidiffError(f"labels {name} row {i} is {np.array2string(rows[i], threshold=8)} "
                            f"({what}); pass one-hot rows (a single 1) or class indices: minidiff "
                            f"trains on hard labels and mixes classes only when sampling (--mix)")
    return rows.astype(np.float32)
