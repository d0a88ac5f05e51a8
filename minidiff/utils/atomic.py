"""Write files so that neither a crash nor a power cut leaves half of one behind.

Every output minidiff writes (checkpoints, images, JSON, .npy) goes to a temporary file in the same
folder first and is then renamed over the target with `os.replace`, which is atomic on POSIX and
Windows: a reader sees either the old file or the new one, never a torn one. The temporary file is
fsynced before the rename (so the new name never points at data still in the page cache), and the
folder after it where the OS allows (so the rename itself survives a power cut).

A process killed mid-write leaves its temporary behind (`.checkpoint.k3j9x2ab.tmp.pt` beside
`checkpoint.pt`); `remove_leftovers` deletes those, and the trainer calls it when a run starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# `.<stem>.<8 random characters from mkstemp>.tmp<suffix>`: the names `atomic_path` makes
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    The temporary name keeps the target's suffix so that writers that choose a format by suffix
    (Pillow, numpy) behave as they would for the real name. The writer must have closed the file
    when the `with` block ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that interrupted atomic writes left in `folder`; return them.

    Only names of the form `atomic_path` makes are touched, and only directly in `folder`. Call it
    while no other process writes there (the trainer holds the run folder's lock when it does).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk: a full disk shows here at the latest."""
    # O_RDWR rather than O_RDONLY: Windows' fsync (_commit) needs a handle open for writing
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable. Windows cannot open a folder, and some file systems
    refuse to fsync one (EINVAL): there the rename is as durable as the OS makes it."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
