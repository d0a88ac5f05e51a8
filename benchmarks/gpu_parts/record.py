"""What every part of benchmarks/gpu.py shares: the sizes it runs at, the Recorder that saves a
part's rows as they come (so a part killed at the end of its time box keeps them), the boxed
subprocess that does the killing, and a wall clock that waits for the GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    sprite_batches: tuple  # kernels: (B, 3, 16, 16)
    large: tuple  # kernels: element counts, as rows of 4096
    n_sprites: int  # end to end
    n_feat: int  # the network's width (the default recipe's is 64)
    T: int  # DDPM steps
    few_steps: int  # DDIM (and newer samplers) steps
    batch_size: int  # training
    steps: int  # timed training steps
    warmup: int  # untimed training steps first
    n_images: int  # training images
    repeats: int  # end to end: the best of this many runs


GPU = Sizes((32, 256, 1024, 4096), (2**24, 2**26), 1024, 64, 500, 25, 128, 30, 5, 4096, 2)
DRY = Sizes((4,), (2**12,), 2, 8, 10, 3, 8, 2, 1, 32, 1)


class Skip(Exception):
    """A part or row that cannot run here, with the reason."""


class Recorder:
    """One part's results, rewritten to its file after every change so a killed part keeps them."""

    def __init__(self, path: Path, deadline: float):
        self.path, self.deadline, self.data = path, deadline, {"rows": []}

    def left(self) -> float:
        """Seconds until this part should stop starting new work."""
        return self.deadline - time.time()

    def row(self, **row) -> None:
        self.data["rows"].append(row)
        self.save()

    def attempt(self, row: dict, measure, need_s: float) -> None:
        """Record `row` with what measure() returns and status "ok"; "skipped: out of time" when
        fewer than need_s seconds are left, or the Skip's reason, or the failure: one row's
        failure must not hide the others'."""
        if self.left() < need_s:
            return self.row(**row, status="skipped: out of time")
        try:
            row = row | measure() | {"status": "ok"}
        except Skip as why:
            row = row | {"status": f"skipped: {why}"}
        except Exception as error:
            row = row | {"status": f"failed: {type(error).__name__}: {error}"[:300]}
        self.row(**row)

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # a reader never sees half a file


def run_boxed(cmd, timeout: float, log, env=None, cwd=REPO) -> str:
    """Run cmd in a session of its own; kill the whole session (children too) at the timeout.
    Returns "ok", "failed (exit N)" or "timeout"."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its process group: the part and what it started
        proc.wait()
        return "timeout"
    return "ok" if code == 0 else f"failed (exit {code})"


def seconds(fn, device) -> float:
    """Wall-clock seconds of fn(), the GPU's queued work included."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
