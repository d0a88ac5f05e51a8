"""Where the commands write: checked before the work starts, written together after it.

The rules `sample`, `eval` and `data` share:

- Without a path, outputs go into the run's folder under a name saying what made them
  (`made_by`: sampler, steps, eta, guidance, class or mix, seed, e.g.
  `runs/<run>/samples/ddim-25-eta1-g2-hero+food-seed0.png`,
  `runs/<run>/eval/ddim-25-eta1-seed0.json`), and an earlier output keeps its name: the new one
  takes the first free numbered suffix (`ddim-25-eta1-seed0-2.png`).
- A path given with a flag that already exists is refused unless `--overwrite`.
- No output may be an input of the same command (`--out R/checkpoint.pt`) or another output
  (`--gif` equal to `--out`): paths are compared resolved, so `R/../R/x` is `R/x`.
- Every output folder is created and probed for writing before the work, so a read-only or
  unwritable folder costs a line, not the sampling.
- The files are written together (`write_together`): each to a temporary beside it, all renamed
  only once all are written, so a full disk leaves none of them rather than half.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from minidiff.data.images import SUFFIXES, check_suffix
from minidiff.utils.atomic import atomic_path, fsync_file
from minidiff.utils.errors import MinidiffError


def made_by(config, T: int, seed: str, classes=None, mix=None) -> str:
    """A file stem saying what made an output: the sampler and its steps, DDIM's eta, the
    guidance, the classes (`hero+food`) or mix rows (`mix-hero=1+food=0.6`), the seed(s)."""
    parts = [config.sampler, str(len(config.timesteps(T)) - 1)]
    if config.sampler == "ddim":
        parts.append(f"eta{config.eta:g}")
    if config.guidance is not None:
        parts.append(f"g{config.guidance:g}")
    if classes:
        parts.append("+".join(map(str, classes)))
    for row in mix or []:
        parts.append("mix-" + "+".join(w.strip() for w in row.split(",") if w.strip()))
    parts.append(seed)
    stem = re.sub(r"[^\w.+=-]+", "_", "-".join(parts))  # a name every file system takes
    return stem if len(stem) <= 120 else f"{stem[:100]}-{seed}"


@dataclass
class Output:
    """One file a command will write."""

    flag: str  # the flag that names it ("--out"), or the flag whose file it sits beside
    path: Path
    kind: str  # "grid", "gif", "npy" or "json" (`minidiff.data.images.SUFFIXES`)
    chosen: bool  # True when the user gave the path; False for a default name
    role: str = ""  # what the command writes there, when one kind has several ("contexts")


def free_stem(folder: Path, stem: str, suffixes: Iterable[str]) -> Path:
    """folder/stem, or folder/stem-2, -3, ...: the first whose files (one per suffix) are new."""
    suffixes = list(suffixes)
    for number in range(1, 100_000):
        candidate = folder / (stem if number == 1 else f"{stem}-{number}")
        if not any(Path(f"{candidate}{suffix}").exists() for suffix in suffixes):
            return candidate
    raise MinidiffError(f"{folder} holds 100,000 outputs named {stem}: clear some out")


def check_outputs(outputs: list[Output], inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse, in one line and before any work, an output that breaks a rule of the module."""
    read = {Path(p).resolve(): p for p in inputs if p is not None}
    seen: dict[Path, Output] = {}
    for output in outputs:
        resolved = output.path.resolve()
        if resolved in read:
            raise MinidiffError(f"{output.flag} {output.path} is {read[resolved]}, an input of "
                                "this command: give another path")
        if resolved in seen:
            raise MinidiffError(f"{output.flag} and {seen[resolved].flag} both name "
                                f"{output.path}: give them different paths")
        seen[resolved] = output
        if output.path.is_dir():
            example = output.path / f"samples{SUFFIXES[output.kind]}"
            raise MinidiffError(f"{output.flag} {output.path} is a folder; give a file name such "
                                f"as {example}")
        check_suffix(output.path, output.kind)
        if output.path.exists() and output.chosen and not overwrite:
            raise MinidiffError(f"{output.flag} {output.path} already exists: pass --overwrite "
                                "to replace it, or give another path")
    for folder in sorted({o.path.parent for o in outputs}):
        probe_folder(folder, next(o.flag for o in outputs if o.path.parent == folder))


def probe_folder(folder: Path, flag: str) -> None:
    """Create `folder` if needed and write (then delete) an empty file in it."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise MinidiffError(f"{flag}: cannot write in {folder}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minidiff-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise MinidiffError(f"{flag}: cannot write in {folder} ({_reason(error)}); give a "
                            "path in a folder you can write to") from None


def write_together(writes: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Call each writer with a temporary path beside its target; rename all only if all succeed.

    An OSError (a full disk, a folder made read-only meanwhile) becomes one line, and no target
    is touched: each temporary is removed as the error unwinds.
    """
    current = None
    try:
        with ExitStack() as stack:
            for path, writer in writes:
                current = path
                tmp = stack.enter_context(atomic_path(path))
                writer(tmp)
                fsync_file(tmp)  # a full disk shows here at the latest, before any rename
            current = None  # the renames run as the stack closes
    except OSError as error:
        if current is None:  # rare: the data was all written, a rename or fsync failed
            raise MinidiffError(f"finishing the outputs failed ({_reason(error)}); some may be "
                                "missing: free some space and run again") from None
        raise MinidiffError(f"writing {current} failed ({_reason(error)}); none of this "
                            "command's outputs were written: free some space or give another "
                            "path") from None


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    return error.strerror or type(error).__name__
