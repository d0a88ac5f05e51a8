"""What keeps a training run from being lost: signals deferred to a step boundary, no checkpoint
with a non-finite tensor, the likely cause of a divergence, failed writes as one line.

Used by `minidiff.training.trainer`; each helper is small and free of the trainer's state.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
from pathlib import Path

import torch

from minidiff.utils.errors import MinidiffError

# How torch.save's writer words a failed write; below LOW_SPACE bytes free, a disk counts as full
TORCH_WRITE_FAILURES = ("unexpected pos", "iostream error", "PytorchStreamWriter failed",
                        "file write failed")
LOW_SPACE = 64 * 2**20


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C (SIGINT) and SIGTERM (torchrun stopping its workers) set a flag that the loop
    checks between steps, so the checkpoint it then writes is never half a step; a second signal
    stops at once."""
    state = {"hit": False}

    def handler(signum, frame):
        if state["hit"]:
            raise KeyboardInterrupt
        state["hit"] = True

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signals alone
            pass
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def all_finite(state) -> bool:
    """Is every floating-point tensor in `state` (nested dicts and lists) finite? One sync."""
    tensors = []

    def collect(value):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                tensors.append(torch.isfinite(value).all())
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    collect(state)
    return not tensors or bool(torch.stack(tensors).all())


def divergence_cause(dataset, config) -> str:
    """The likeliest reason a run on `dataset` with `config` diverged, with its fix: the data
    first (NaN in the images or labels), then the flags that make AdamW blow up."""
    data = dataset
    if not bool(torch.isfinite(data.images).all()):
        return "because the training images hold NaN or inf values: fix --data"
    if not bool(torch.isfinite(data.contexts).all()):
        return "because the labels hold NaN or inf values: fix --labels"
    c, causes = config, []
    if c.optimizer == "adamw" and c.lr * c.weight_decay >= 1:
        causes.append(f"--weight-decay {c.weight_decay:g} (each step multiplies the weights by "
                      f"1 - lr x weight decay = {1 - c.lr * c.weight_decay:g}): lower it below "
                      f"{1 / c.lr:g}")
    if not c.grad_clip:
        causes.append("--grad-clip 0: keep clipping on (the default is 1)")
    if not causes or c.lr > 1e-2:
        causes.append(f"--lr {c.lr:g}: lower it (the default is 0.004)")
    return "likely from " + "; and ".join(causes)


@contextlib.contextmanager
def writing(out: Path, what: str, kept: str = ""):
    """Turn a failed write (a full disk, a read-only folder) into one line naming the fix.

    torch.save writes through C++ and reports a full disk as a RuntimeError ("unexpected pos",
    "iostream error"), not an OSError: those count as failed writes too, and the free space
    left says whether the disk was full.
    """
    try:
        yield
    except (OSError, RuntimeError) as error:
        if isinstance(error, OSError):
            code, reason = error.errno, error.strerror or type(error).__name__
        elif any(words in str(error) for words in TORCH_WRITE_FAILURES):
            code = errno.ENOSPC if shutil.disk_usage(out).free < LOW_SPACE else None
            reason = os.strerror(errno.ENOSPC) if code else "the write failed"
        else:
            raise
        fix = "free some space" if code in (errno.ENOSPC, errno.EDQUOT) else "check its permissions"
        tail = f"; {kept}" if kept else ""
        raise MinidiffError(f"cannot write {what} in {out} ({reason}): {fix}, or pass another "
                            f"--out{tail}") from None
