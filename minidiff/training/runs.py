"""A training run's folder: what the trainer writes, and the checks made before it writes anything.

    runs/NAME/
      config.json          the full configuration, the network's and schedule's, the data's hash
      metrics.jsonl        one JSON line per log interval: step, epoch, loss, lr, images/s, time
      samples_<step>.png   a preview grid (DDIM, EMA weights), one column per class
      samples.png          the latest preview
      checkpoint.pt        weights, EMA, optimizer and step: `minidiff.checkpoint`'s layout
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

from minidiff.checkpoint import CHECKPOINT_NAME, load_checkpoint
from minidiff.data.images import columns, save_grid
from minidiff.utils.atomic import remove_leftovers, write_json, write_text
from minidiff.utils.errors import MinidiffError

try:
    import fcntl
except ImportError:  # Windows: no flock; a run folder is then not guarded against a second writer
    fcntl = None

CONFIG_NAME, METRICS_NAME, LOCK_NAME = "config.json", "metrics.jsonl", ".lock"
RUN_KIND = "train"  # a diffusion run: its recipe is `config["train"]` of its checkpoint
# What a run stopped before its first checkpoint leaves: starting it again may replace these
RUN_FILES = (CONFIG_NAME, METRICS_NAME, LOCK_NAME, "samples.png")


def default_out(runs_dir: str = "runs", prefix: str = "") -> Path:
    """runs/<prefix><YYYYmmdd-HHMMSS>: a new folder per run."""
    return Path(runs_dir) / time.strftime(f"{prefix}%Y%m%d-%H%M%S")


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


def saved_config(out: Path, kind: str) -> dict:
    """The recipe (`config[kind]`: "train" or "autoencoder") of the run `--resume` continues."""
    path = resume_checkpoint(out)
    state = load_checkpoint(path, kind="run" if kind == RUN_KIND else kind)
    recipe = state["config"].get(kind)
    if not isinstance(recipe, dict):
        raise MinidiffError(f"{path} holds no {kind} recipe to resume; train into a new --out")
    return recipe


def check_batch_size(batch_size: int, n_images: int, world_size: int = 1) -> None:
    if batch_size > n_images:
        raise MinidiffError(f"--batch-size {batch_size} is larger than the data ({n_images} "
                            f"images); pass --batch-size {n_images} or less")
    if batch_size % world_size:
        raise MinidiffError(f"--batch-size {batch_size} does not split over {world_size} "
                            "processes; pass a multiple of it")


def check_same_network(path: Path, theirs: dict | None, ours: dict) -> None:
    if theirs != ours:
        theirs = theirs or {}
        raise MinidiffError(
            f"{path} holds a {theirs.get('arch')} network (n_feat {theirs.get('n_feat')}, "
            f"{theirs.get('n_cfeat')} classes, {theirs.get('height')} px) but this run asks "
            f"for {ours['arch']} (n_feat {ours['n_feat']}, {ours['n_cfeat']} classes, "
            f"{ours['height']} px); drop the flags that differ, or train into a new --out")


def check_same_data(path: Path, theirs: str | None, ours: str) -> None:
    if theirs != ours:
        raise MinidiffError(f"{path} was trained on other data (hash {theirs}, now {ours}); "
                            "resume with the same --data/--labels/--classes/--n-images/"
                            "--image-size, or train into a new --out")


def check_same_recipe(path: Path, saved: dict, config, session_fields) -> None:
    """Every saved field that is not a session field equals `config`'s."""
    for name, value in saved.items():
        if name not in session_fields and getattr(config, name, value) != value:
            raise MinidiffError(f"{path} was trained with {name}={value!r} but this run asks "
                                f"for {getattr(config, name)!r}; drop that flag to resume, or "
                                "train into a new --out")


def check_length(out: Path, done: int, total: int | None, saved_total: int | None,
                 config) -> bool:
    """Has a resumed run steps left? False when it has; True when it is finished (nothing is
    then written: the trainer says how to extend it); a length it has passed is refused."""
    total = total if total is not None else saved_total
    if total is None or done < total:
        return False
    if total == saved_total and done == total:
        return True
    epochs = getattr(config, "epochs", None)
    flag = f"--epochs {epochs:g}" if epochs else f"--steps {total}"
    raise MinidiffError(f"{flag}: the run in {out} is already at step {done}; pass --steps "
                        f"above {done} to train it longer (nothing was changed)")


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


def save_preview(out: Path, step: int, images: torch.Tensor, per_class: int = 8,
                 n_classes: int | None = None) -> Path:
    """The preview grid, one column per class (None: len(images) // per_class of them)."""
    width = columns(len(images), len(images) // per_class if n_classes is None else n_classes)
    path = out / f"samples_{step:06d}.png"
    save_grid(images, path, nrow=width)
    save_grid(images, out / "samples.png", nrow=width)
    return path
