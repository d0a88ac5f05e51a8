"""A training run's folder: what the trainer writes, and the checks made before it writes anything.

    runs/NAME/
      config.json          the full configuration, the network's and schedule's, the data's hash
      metrics.jsonl        one JSON line per log interval: step, epoch, loss, lr, images/s, time
      samples_<step>.png   a preview grid (DDIM, EMA weights), one row per class
      samples.png          the latest preview
      checkpoint.pt        weights, EMA, optimizer and step: `minidiff.training.checkpoint`'s layout

Every file is written atomically (`minidiff.utils.atomic`) except metrics.jsonl, which is appended line
by line; a resumed run first drops the lines logged after its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from minidiff.utils.atomic import write_json
from minidiff.training.checkpoint import CHECKPOINT_NAME
from minidiff.utils.errors import MinidiffError
from minidiff.data.images import save_grid
from minidiff.sampling import SamplerConfig, sample_loop
from minidiff.schedules import Schedule

CONFIG_NAME, METRICS_NAME = "config.json", "metrics.jsonl"


def default_out(runs_dir: str = "runs") -> Path:
    """runs/<YYYYmmdd-HHMMSS>: a new folder per run."""
    return Path(runs_dir) / time.strftime("%Y%m%d-%H%M%S")


def check_out(out: Path, resume: bool) -> None:
    """Refuse, before anything is written, an output folder that would lose or mix up work."""
    if resume:
        if not (out / CHECKPOINT_NAME).is_file():
            raise MinidiffError(f"--resume: there is no {CHECKPOINT_NAME} in {out} to continue "
                                "from; check --out, or drop --resume to start a new run")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MinidiffError(f"output folder {out} already exists; pass --resume to continue "
                            "that run or choose another --out")
    _check_writable(out)


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

    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = out / METRICS_NAME
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def preview(model, schedule: Schedule, *, n_classes: int, shape, seed: int, per_class: int = 8,
            n_steps: int = 25) -> torch.Tensor:
    """A preview batch: `per_class` images per class (one row each; 4 rows unconditional).

    DDIM with `sampling.sample_loop` (the course's spacing: 500, 480, ..., 20, 0 for T = 500) at
    eta = 1, not the course's eta = 0: fresh noise at each jump corrects a young network's errors
    where deterministic DDIM follows them (a 1,245-step default-recipe run: FID 0.55 against 0.93; see
    benchmarks/RESULTS.md, Sampling). The noise is seeded and the same at every preview, so the
    grids show training progress rather than new draws.
    """
    rows = n_classes or 4
    device = next(model.parameters()).device
    c = None
    if n_classes:  # row k: one-hot class k
        c = torch.eye(n_classes, device=device).repeat_interleave(per_class, dim=0)
    config = SamplerConfig(sampler="ddim", steps=min(n_steps, schedule.T), eta=1.0)
    x, _, _ = sample_loop(model, schedule, (rows * per_class, *shape), c, config, seed=seed)
    return x


def save_preview(out: Path, step: int, images: torch.Tensor, per_class: int = 8) -> Path:
    path = out / f"samples_{step:06d}.png"
    save_grid(images, path, nrow=per_class)
    save_grid(images, out / "samples.png", nrow=per_class)
    return path
