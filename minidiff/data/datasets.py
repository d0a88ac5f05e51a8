"""Datasets: the built-in sprites, the course's `.npy` files, or a folder of images.

Every source ends as the same `Dataset`: float32 images (N, C, H, W) in [-1, 1], exactly the
course's `ToTensor()` then `Normalize(0.5, 0.5)`, and float32 contexts (N, n_classes), one-hot
rows (the course's labels), or (N, 0) when there are no labels.

Sources, chosen by `data`, each read by its own module:
- `None` or `"sprites"`: `minidiff.data.sprites.make_sprites` (20,000 unless `n` says otherwise),
  drawn at 16x16 and enlarged by nearest neighbour when `image_size` asks (`minidiff.data.resize`).
- a `.npy` file in the course's layout (`minidiff.data.npy`): uint8 (N, H, W, 3) on white, with
  labels in a second `.npy` (one-hot rows or integer class indices, hard labels only).
- a folder of PNG, JPEG or GIF images, with one subfolder per class or none (unlabelled)
  (`minidiff.data.folders`).

Class names come from `classes` ("a,b,c", a list, or a .json path), else from a folder's class
subfolders, else from `<name>_classes.json` beside the data (a list, or an object with a
"classes" list, like `rltiles_items_classes.json`), else "class0", "class1", ...

Bounded memory: every size is checked before anything that large is allocated, against the
limits of `minidiff.data.limits` (image side, classes, bytes of one dataset). Non-square images
are padded with white to a square, then shrunk to `image_size` by area averaging
(`minidiff.data.resize`).

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

from minidiff.data.folders import load_folder
from minidiff.data.limits import check_image_size, check_memory
from minidiff.data.npy import load_npy, subset
from minidiff.data.resize import enlarge
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.utils.errors import MinidiffError

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
    check_image_size(image_size)
    if n is not None and (not _is_int(n) or n < 1):
        raise MinidiffError(f"n={n} must be at least 1")
    if data is None or str(data) == BUILTIN:
        check_memory(20000 if n is None else n, image_size, "the built-in sprites")
        pixels, index = make_sprites(20000 if n is None else n, seed)
        onehot = np.eye(len(CLASSES), dtype=np.float32)[index]
        return _to_dataset(enlarge(pixels, image_size), onehot, list(CLASSES), BUILTIN)
    path = Path(data)
    if not path.exists():
        raise MinidiffError(f"data {str(path)!r} does not exist; pass a .npy file, a folder of "
                            f"images, or '{BUILTIN}' for the built-in sprites")
    if path.is_dir():
        if labels is not None:
            raise MinidiffError(f"labels are given by the subfolders of {str(path)!r}; drop the "
                                f"labels argument")
        pixels, onehot, names = load_folder(path, image_size)
    else:
        pixels, onehot, names = load_npy(path, labels, image_size, n, seed)
    if classes is not None or onehot.shape[1]:
        names = _class_names(classes, path, onehot.shape[1], names)
    pixels, onehot = subset(pixels, onehot, n, seed)
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


# ---- Class names ----

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
