"""Write files so that a crash never leaves half of one behind.

Every output minidiff writes (checkpoints, images, JSON, .npy) goes to a temporary file in the same
folder first and is then renamed over the target with `os.replace`, which is atomic on POSIX and
Windows: a reader sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    The temporary name keeps the target's suffix so that writers that choose a format by suffix
    (Pillow, numpy) behave as they would for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write `text` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npy(path: str | os.PathLike, array) -> None:
    """Atomically write `array` as a NumPy .npy file."""
    import numpy as np  # only the writers of arrays need NumPy here

    with atomic_path(path) as tmp:
        np.save(tmp, array)
