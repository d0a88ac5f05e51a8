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
  Transparency is composited on white, as the course's sprites are drawn.

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
    if image_size < 4 or image_size % 4:
        raise MinidiffError(f"image_size={image_size} must be a positive multiple of 4 (the U-Net "
                            f"halves it twice); try 16 or 32")
    if n is not None and n < 1:
        raise MinidiffError(f"n={n} must be at least 1")
    if data is None or str(data) == BUILTIN:
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
        pixels, onehot, names = _load_npy(path, labels, image_size)
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

def _load_npy(path: Path, labels: str | None, image_size: int):
    pixels = _read_npy(path, "data")
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
    onehot = _load_labels(path, labels, len(pixels))
    return _shrink(pixels, image_size, path.name), onehot, []


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise MinidiffError(f"cannot read {what} {str(path)!r} as a .npy array "
                            f"({str(error).splitlines()[0]}); save it with numpy.save") from None


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
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise MinidiffError(f"labels {Path(labels).name} have dtype {values.dtype}; expected "
                            f"numbers (one-hot rows or class indices)")
    if len(values) != count or values.ndim not in (1, 2):
        raise MinidiffError(f"labels {Path(labels).name} have shape {values.shape} for {count} "
                            f"images; expected ({count}, n_classes) one-hot or ({count},) indices")
    if values.ndim == 2:
        return values.astype(np.float32)
    if not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        raise MinidiffError(f"labels {Path(labels).name} are 1-D but not class indices >= 0; "
                            f"pass integers 0..K-1 or one-hot rows")
    return np.eye(int(values.max()) + 1, dtype=np.float32)[values]


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
    folders = sorted(d for d in path.iterdir() if d.is_dir() and _images_in(d))
    if files and folders:
        raise MinidiffError(f"{str(path)!r} holds both images and class subfolders; move the "
                            f"loose images into a subfolder")
    if not files and not folders:
        raise MinidiffError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r} or its "
                            f"subfolders; point data at a folder of images")
    if files:
        pixels = np.stack([_read_image(f, image_size) for f in files])
        return pixels, np.zeros((len(pixels), 0), np.float32), []
    per_class = [[_read_image(f, image_size) for f in _images_in(d)] for d in folders]
    index = np.concatenate([np.full(len(p), k) for k, p in enumerate(per_class)])
    pixels = np.stack([image for group in per_class for image in group])
    return pixels, np.eye(len(folders), dtype=np.float32)[index], [d.name for d in folders]


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size, 3): on white, padded square, box-shrunk."""
    try:
        with Image.open(file) as image:
            rgba = image.convert("RGBA")  # a GIF gives its first frame
    except (UnidentifiedImageError, OSError) as error:
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
    """uint8 (N, H, W, 3) -> (N, S, S, 3): pad to square with white, then area-average down."""
    n, h, w, _ = pixels.shape
    if max(h, w) < image_size:
        raise MinidiffError(f"{what} images are {h}x{w}, smaller than image_size={image_size}; "
                            f"use image_size={max(4, max(h, w) // 4 * 4)} or larger images")
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
