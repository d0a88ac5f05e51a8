"""Datasets: the built-in sprites, the course's `.npy` files, or a folder of images.

Every source ends as the same `Dataset`: float32 images (N, C, H, W) in [-1, 1], exactly the
course's `ToTensor()` then `Normalize(0.5, 0.5)`, and float32 contexts (N, n_classes), one-hot
rows (the course's labels), or (N, 0) when there are no labels.

Sources, chosen by `data`:
- `None` or `"sprites"`: `minidiff.data.sprites.make_sprites` (20,000 unless `n` says otherwise).
- a `.npy` file in the course's layout: uint8 (N, H, W, 3) on white, with labels in a second `.npy`
  (one-hot rows of any numeric dtype, or integer class indices). Without `labels`, the course's
  sibling name `<name>_labels_<H>x<W>.npy` is used when it exists. Class names come from `classes`
  ("a,b,c", a list, or a .json path), else from `<name>_classes.json` beside the data (a list, or
  an object with a "classes" list, like `rltiles_items_classes.json`), else "class0", "class1", ...
- a folder of PNG, JPEG or GIF images, with one subfolder per class or none (unlabelled).
  Transparency is composited on white, as the course's sprites are drawn. Class subfolders are
  ordered naturally: `1`, `2`, `10` (not `1`, `10`, `2`), so a class's number is its index.

Labels are one-hot rows or class indices, nothing else: a row that is not exactly one 1 and zeros
(a NaN, an inf, a soft label like [0.5, 0.5]) is refused with its row number. minidiff trains on
hard labels, as the course does; mixing classes is a sampling-time choice (`sample --mix`).

Bounded memory: every size is checked before anything that large is allocated. A `.npy` header
must describe exactly the bytes the file holds (a header claiming 10^12 images is refused without
reading on); an image's size is read from its header before it is decoded (at most
`MAX_IMAGE_SIDE` pixels a side); at most `MAX_CLASSES` classes; and the float32 images of one
dataset at most `MAX_DATASET_BYTES` (checked from the count and `image_size` before loading).

Resizing: non-square images are padded with white to a square (keeping the sprite's shape), then
shrunk to `image_size` by area averaging (a box filter: each output pixel is the mean of the input
pixels it covers, so thin pixel-art lines fade instead of vanishing or aliasing, as bilinear and
nearest would do). Only the built-in sprites may be enlarged, by nearest neighbour, since they are
pixel art drawn at 16x16; other images smaller than `image_size` are an error.

Tutorial: tutorials/08_your_own_sprites.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError

from minidiff.utils.errors import MinidiffError
from minidiff.data.sprites import CLASSES, make_sprites

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
BUILTIN = "sprites"
MAX_IMAGE_SIDE = 4096  # pixels on the longer side of an image file (padded square: 64 MiB RGBA)
MAX_CLASSES = 1000  # classes one dataset may have (a context input of the network each)
MAX_DATASET_BYTES = 8 * 2**30  # the float32 images (N, 3, S, S) a dataset holds in memory
SHRINK_BYTES = 2**28  # resize arrays in chunks of about this many float32 bytes


@dataclass
class Dataset:
    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1]
    contexts: torch.Tensor  # float32 (N, n_classes) one-hot, or (N, 0) when unlabelled
    classes: list[str] = field(default_factory=list)  # names in context order; [] if unlabelled
    name: str = BUILTIN  # used for output names, e.g. `<name>_16x16.npy`

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(data: str | None = None, labels: str | None = None,
                 classes: str | list[str] | None = None, image_size: int = 16,
                 n: int | None = None, seed: int = 0) -> Dataset:
    """Load `data` (see the module docstring) as a `Dataset` of `image_size` x `image_size`."""
    if not _is_int(image_size) or image_size < 4 or image_size % 4:
        raise MinidiffError(f"image_size={image_size} must be a positive multiple of 4 (the U-Net "
                            f"halves it twice); try 16 or 32")
    if n is not None and (not _is_int(n) or n < 1):
        raise MinidiffError(f"n={n} must be at least 1")
    if data is None or str(data) == BUILTIN:
        _check_memory(20000 if n is None else n, image_size, "the built-in sprites")
        pixels, index = make_sprites(20000 if n is None else n, seed)
        onehot = np.eye(len(CLASSES), dtype=np.float32)[index]
        return _to_dataset(_enlarge(pixels, image_size), onehot, list(CLASSES), BUILTIN)
    path = Path(data)
    if not path.exists():
        raise MinidiffError(f"data {str(path)!r} does not exist; pass a .npy file, a folder of "
                            f"images, or '{BUILTIN}' for the built-in sprites")
    if path.is_dir():
        if labels is not None:
            raise MinidiffError(f"labels are given by the subfolders of {str(path)!r}; drop the "
                                f"labels argument")
        pixels, onehot, names = _load_folder(path, image_size)
    else:
        pixels, onehot, names = _load_npy(path, labels, image_size, n, seed)
    if classes is not None or onehot.shape[1]:
        names = _class_names(classes, path, onehot.shape[1], names)
    pixels, onehot = _subset(pixels, onehot, n, seed)
    return _to_dataset(pixels, onehot, names, _stem(path))


def dataset_hash(ds: Dataset) -> str:
    """A short, stable hash of the content (pixels, contexts, class names), not of the name."""
    digest = hashlib.sha256()
    pixels = ((ds.images.detach().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    digest.update(ds.contexts.detach().cpu().to(torch.float32).numpy().tobytes())
    digest.update("\n".join(ds.classes).encode())
    return digest.hexdigest()[:16]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_memory(count: int, image_size: int, what: str) -> None:
    """Refuse a dataset whose float32 images would not fit in MAX_DATASET_BYTES."""
    need = count * 3 * image_size**2 * 4
    if need > MAX_DATASET_BYTES:
        raise MinidiffError(f"{count} images of {image_size}x{image_size} from {what} need "
                            f"{need / 2**30:.1f} GiB as float32, over the "
                            f"{MAX_DATASET_BYTES // 2**30} GiB a dataset may hold; pass a smaller "
                            f"n (--n-images) or image_size")


def _to_dataset(pixels: np.ndarray, onehot: np.ndarray, names: list[str], name: str) -> Dataset:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1], ToTensor, then Normalize(0.5, 0.5)."""
    images = rearrange(torch.from_numpy(pixels), "n h w c -> n c h w").float() / 255.0
    contexts = torch.from_numpy(np.ascontiguousarray(onehot, dtype=np.float32))
    return Dataset(images=(images - 0.5) / 0.5, contexts=contexts, classes=names, name=name)


def _stem(path: Path) -> str:
    """`sprites_1788_16x16.npy` -> `sprites_1788`: the name without the course's size suffix."""
    stem = path.stem if path.is_file() else path.name
    head, _, tail = stem.rpartition("_")
    return head if head and "x" in tail and tail.replace("x", "").isdigit() else stem


def _subset(pixels, onehot, n, seed):
    if n is None or n >= len(pixels):
        return pixels, onehot
    keep = np.sort(np.random.default_rng(seed).permutation(len(pixels))[:n])
    return pixels[keep], onehot[keep]


# %% .npy files in the course's layout

def _load_npy(path: Path, labels: str | None, image_size: int, n: int | None, seed: int):
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
    _check_memory(min(n or len(pixels), len(pixels)), image_size, path.name)
    onehot = _load_labels(path, labels, len(pixels))
    pixels, onehot = _subset(pixels, onehot, n, seed)  # only the images kept are read
    return _shrink(pixels, image_size, path.name), onehot, []


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


def _class_names(classes, path: Path, k: int, found: list[str]) -> list[str]:
    """Names from `classes`, else from found subfolders, else `<name>_classes.json`, else classK."""
    if isinstance(classes, str):
        names = _read_classes_json(Path(classes)) if classes.endswith(".json") else [
            s.strip() for s in classes.split(",")]
    elif classes is not None:
        names = [str(s) for s in classes]
    elif found:
        names = found
    else:
        beside = path.parent / f"{_stem(path)}_classes.json"
        names = _read_classes_json(beside) if beside.is_file() else [f"class{i}" for i in range(k)]
    if k == 0:
        raise MinidiffError("class names were given but the data has no labels; pass labels too")
    if len(names) != k:
        raise MinidiffError(f"{len(names)} class names ({', '.join(names)}) for {k} label "
                            f"columns; give one name per class")
    return names


def _read_classes_json(path: Path) -> list[str]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MinidiffError(f"cannot read class names from {str(path)!r}: {error}") from None
    names = content.get("classes") if isinstance(content, dict) else content
    if not isinstance(names, list):
        raise MinidiffError(f"{path.name} must hold a list of class names or "
                            f"{{\"classes\": [...]}}")
    return [str(s) for s in names]


# %% Folders of images

def _load_folder(path: Path, image_size: int):
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    folders = sorted((d for d in path.iterdir() if d.is_dir() and _images_in(d)),
                     key=lambda d: natural_key(d.name))
    if files and folders:
        raise MinidiffError(f"{str(path)!r} holds both images and class subfolders; move the "
                            f"loose images into a subfolder")
    if not files and not folders:
        raise MinidiffError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r} or its "
                            f"subfolders; point data at a folder of images")
    if len(folders) > MAX_CLASSES:
        raise MinidiffError(f"{str(path)!r} holds {len(folders)} class subfolders, over "
                            f"{MAX_CLASSES}; group the images into fewer classes")
    _check_memory(len(files) or sum(len(_images_in(d)) for d in folders), image_size, path.name)
    if files:
        pixels = np.stack([_read_image(f, image_size) for f in files])
        return pixels, np.zeros((len(pixels), 0), np.float32), []
    per_class = [[_read_image(f, image_size) for f in _images_in(d)] for d in folders]
    index = np.concatenate([np.full(len(p), k) for k, p in enumerate(per_class)])
    pixels = np.stack([image for group in per_class for image in group])
    return pixels, np.eye(len(folders), dtype=np.float32)[index], [d.name for d in folders]


def natural_key(name: str) -> tuple:
    """Sort key that reads digit runs as numbers: "2" < "10", "item9" < "item10"."""
    parts = re.split(r"(\d+)", name)  # text at even places, digits at odd ones: never mixed
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size, 3): on white, padded square, box-shrunk."""
    try:
        with Image.open(file) as image:  # reads the header only: the size, not the pixels
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise MinidiffError(f"{file.name} is {width}x{height}, over {MAX_IMAGE_SIDE} "
                                    f"pixels on a side; shrink it first (sprites are small)")
            rgba = image.convert("RGBA")  # a GIF gives its first frame
    except Image.DecompressionBombError as error:  # a header claiming over Pillow's limit
        claimed = re.search(r"\d+ pixels", str(error))
        raise MinidiffError(f"{file.name} claims {claimed[0] if claimed else 'more pixels'}, "
                            f"over Pillow's decompression-bomb limit; remove it or shrink it "
                            f"first (sprites are small)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
        raise MinidiffError(f"cannot read image {str(file)!r} ({type(error).__name__}); remove "
                            f"it or convert it to PNG") from None
    side = max(rgba.size)
    if side < image_size:
        raise MinidiffError(f"{file.name} is {rgba.size[0]}x{rgba.size[1]}, smaller than "
                            f"image_size={image_size}; use a smaller image_size or larger images")
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(rgba, ((side - rgba.size[0]) // 2, (side - rgba.size[1]) // 2))
    rgb = square.convert("RGB")
    if side != image_size:
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(rgb, np.uint8)


# %% Resizing arrays

def _shrink(pixels: np.ndarray, image_size: int, what: str) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, S, S, 3): pad to square with white, then area-average down.

    Works through the images in chunks, so memory stays near SHRINK_BYTES whatever N."""
    n, h, w, _ = pixels.shape
    if max(h, w) < image_size:
        raise MinidiffError(f"{what} images are {h}x{w}, smaller than image_size={image_size}; "
                            f"use image_size={max(4, max(h, w) // 4 * 4)} or larger images")
    chunk = max(1, SHRINK_BYTES // (max(h, w) ** 2 * 3 * 4))
    if n > chunk:
        return np.concatenate([_shrink(pixels[i:i + chunk], image_size, what)
                               for i in range(0, n, chunk)])
    pixels = np.array(pixels)  # a memory-mapped file read into memory, one chunk at a time
    if h != w:
        side = max(h, w)
        square = np.full((n, side, side, 3), 255, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[:, top : top + h, left : left + w] = pixels
        pixels, h = square, side
    if h == image_size:
        return pixels
    x = rearrange(torch.from_numpy(pixels), "n h w c -> n c h w").float()
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="area")
    return rearrange(x.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c").numpy()


def _enlarge(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """The built-in 16x16 pixel art at another size: nearest neighbour up, area average down."""
    size = pixels.shape[1]
    if image_size > size and image_size % size == 0:
        factor = image_size // size
        return pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    if image_size > size:
        x = rearrange(torch.from_numpy(pixels), "n h w c -> n c h w")
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="nearest")
        return rearrange(x, "n c h w -> n h w c").numpy()
    return _shrink(pixels, image_size, "built-in")
