"""A training run's folder: what the trainer writes, and the checks made before it writes anything.

    runs/NAME/
      config.json          the full configuration, the network's and schedule's, the data's hash
      metrics.jsonl        one JSON line per log interval: step, epoch, loss, lr, images/s, time
      samples_<step>.png   a preview grid (DDIM, EMA weights), one column per class
      samples.png          the latest preview
      checkpoint.pt        weights, EMA, optimizer and step: `minidiff.training.checkpoint`'s layout
      .lock                held (flock) by the one process that writes here: `RunLock`

Every file is written atomically (`minidiff.utils.atomic`) except metrics.jsonl, which is appended
line by line; a resumed run first drops the lines logged after its checkpoint, and a torn last line
(a write cut short by a kill or a full disk) with a warning. A process that dies releases its
lock (the OS drops flock locks with the file descriptor), so a stale `.lock` file blocks nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from minidiff.utils.atomic import remove_leftovers, write_json, write_text
from minidiff.training.checkpoint import CHECKPOINT_NAME
from minidiff.utils.errors import MinidiffError
from minidiff.data.images import columns, save_grid
from minidiff.sampling import ETA, SamplerConfig, sample_loop
from minidiff.schedules import Schedule

try:
    import fcntl
except ImportError:  # Windows: no flock; a run folder is then not guarded against a second writer
    fcntl = None

CONFIG_NAME, METRICS_NAME, LOCK_NAME = "config.json", "metrics.jsonl", ".lock"
# What a run stopped before its first checkpoint leaves: starting it again may replace these
RUN_FILES = (CONFIG_NAME, METRICS_NAME, LOCK_NAME, "samples.png")


def default_out(runs_dir: str = "runs") -> Path:
    """runs/<YYYYmmdd-HHMMSS>: a new folder per run."""
    return Path(runs_dir) / time.strftime("%Y%m%d-%H%M%S")


def resume_checkpoint(out: str | os.PathLike) -> Path:
    """The checkpoint `--resume --out out` continues from; one line refusing when there is none."""
    out = Path(out)
    path = out / CHECKPOINT_NAME
    if path.is_file():
        return path
    if (out / CONFIG_NAME).is_file():
        raise MinidiffError(f"--resume: {out} has no {CHECKPOINT_NAME} yet (the run stopped before "
                            "its first checkpoint); start it again: the command that began it, "
                            f"with --out {out} and without --resume")
    raise MinidiffError(f"--resume: there is no {CHECKPOINT_NAME} in {out} to continue from; "
                        "check --out, or drop --resume to start a new run")


class RunLock:
    """An exclusive flock on `out/.lock`, held while a process writes the run folder."""

    def __init__(self, out: Path):
        self.path, self.created = out / LOCK_NAME, False  # created: `claim_out` made the folder
        self.file = open(self.path, "a+")  # noqa: SIM115 (held open: the lock lives with it)
        if fcntl is None:
            return
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            pid = self.file.read().strip() or "unknown"
            self.file.close()
            raise MinidiffError(f"{out} is in use: another minidiff process (pid {pid}) is "
                                "training there; wait for it to end, or choose another "
                                "--out") from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the descriptor releases the flock


def claim_out(out: Path, resume: bool, say=print) -> RunLock:
    """Make `out` ours before anything is written: writable, locked, cleared of leftovers of
    interrupted writes, and (for a new run) empty or holding only a run that never reached its
    first checkpoint, which is then started again. A refusal leaves no folder it made behind."""
    created, had_lock = not out.exists(), (out / LOCK_NAME).exists()
    _check_writable(out)
    try:
        lock = RunLock(out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        for leftover in remove_leftovers(out):
            say(f"removed {leftover.name}, left in {out} by an interrupted write")
        if not resume:
            _check_new(out, say)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif not had_lock:
            lock.path.unlink(missing_ok=True)  # leave a folder we refused as we found it
        lock.release()
        raise
    lock.created = created
    return lock


def _check_new(out: Path, say) -> None:
    """A new run's folder must be empty, or hold a run stopped before its first checkpoint."""
    names = {p.name for p in out.iterdir()} - {LOCK_NAME}
    unfinished = CONFIG_NAME in names and all(
        n in RUN_FILES or n.startswith("samples_") and n.endswith(".png") for n in names)
    if unfinished:
        say(f"{out} holds a run stopped before its first checkpoint: starting it again")
        for name in names:
            (out / name).unlink()
    elif names:
        raise MinidiffError(f"output folder {out} already exists; pass --resume to continue "
                            "that run or choose another --out")


def _check_writable(out: Path) -> None:
    existing = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise MinidiffError(f"cannot write the output folder {out}: {existing} is not a writable "
                            "folder; pass an --out you can write to")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".minidiff-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise MinidiffError(f"cannot write the output folder {out} ({error.strerror or error}); "
                            "pass an --out you can write to") from None


def write_config(out: Path, config: dict) -> None:
    write_json(out / CONFIG_NAME, config)


class MetricsLog:
    """Appends JSON lines to metrics.jsonl; on resume, keeps only lines up to the checkpoint."""

    def __init__(self, out: Path, resume_step: int | None = None, say=print):
        self.path = out / METRICS_NAME
        if resume_step is not None and self.path.exists():
            records, torn = read_metrics(self.path)
            if torn:
                say(f"warning: dropped the torn last line of {self.path} (a write cut short)")
            kept = [r for r in records if r["step"] <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:  # one write per line: a cut leaves at most the last torn
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> tuple[list[dict], bool]:
    """(the records of metrics.jsonl, whether its last line was torn and is left out).

    The last line may be torn (no newline, or not a whole record): a kill or a full disk cut its
    write short. Any other line that is not a record is an error naming it.
    """
    lines = path.read_text(errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()  # the file ends with a newline, as it should
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records, torn = [], False
    for index, (number, line) in enumerate(numbered):
        record = _record(line)
        if record is not None:
            records.append(record)
        elif index == len(numbered) - 1:
            torn = True
        else:
            raise MinidiffError(f"{path} line {number} is not a metrics record ({line[:40]!r}); "
                                "delete that line (or move the file away) and run again")
    return records, torn


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    ok = (isinstance(record, dict) and isinstance(record.get("step"), int)
          and not isinstance(record["step"], bool))
    return record if ok else None


def preview(model, schedule: Schedule, *, n_classes: int, shape, seed: int, per_class: int = 8,
            n_steps: int = 25) -> torch.Tensor:
    """A preview batch: `per_class` images per class, image i of class i mod k, so that
    `save_preview` gives each class a column (`minidiff.data.images.columns`); 32 unconditional.

    DDIM with `sampling.sample_loop` (the course's spacing: 500, 480, ..., 20, 0 for T = 500) at
    `sampling.ETA` (1, the same as `sample`'s default), not the course's eta = 0: fresh noise at
    each jump corrects a young network's errors where deterministic DDIM follows them. The noise is seeded and the same at every preview, so the
    grids show training progress rather than new draws.
    """
    rows = n_classes or 4
    device = next(model.parameters()).device
    c = None
    if n_classes:  # image i: one-hot class i mod k, cycled as `Pipeline.contexts` does
        c = torch.eye(n_classes, device=device).repeat(per_class, 1)
    config = SamplerConfig(sampler="ddim", steps=min(n_steps, schedule.T), eta=ETA)
    x, _, _ = sample_loop(model, schedule, (rows * per_class, *shape), c, config, seed=seed)
    return x


def save_preview(out: Path, step: int, images: torch.Tensor, per_class: int = 8,
                 n_classes: int | None = None) -> Path:
    """The preview grid, one column per class (None: len(images) // per_class of them)."""
    width = columns(len(images), len(images) // per_class if n_classes is None else n_classes)
    path = out / f"samples_{step:06d}.png"
    save_grid(images, path, nrow=width)
    save_grid(images, out / "samples.png", nrow=width)
    return path
