"""The lab without Gradio: one run's pipeline behind a lock, and the kept frames of a sampling run.

`Lab` opens the one run it was started on and never another: the page names no file. It reloads
the checkpoint when its mtime changes (training goes on in another terminal; the trainer writes
checkpoints atomically by rename) and keeps the pipeline it had when the new one fails to load.
Every use of the network holds `Lab.lock`, so two pages sampling at once each get their own,
correct images.

`Lab.denoise` runs `minidiff.samplers.sample_loop` once and keeps, through its `on_update` hook,
every update's x_t, the network's prediction (eps_theta or v_theta), x0_theta and x_s as uint8
pictures: scrubbing the timeline (`Denoising.frame`) only indexes them. A latent run's pictures
show each latent beside its decoding (`minidiff.autoencoder.beside`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from minidiff.autoencoder import beside, latent_picture
from minidiff.checkpoint import resolve_checkpoint
from minidiff.data.images import columns, to_uint8
from minidiff.lab.formulas import reference_schedule, update_text
from minidiff.lab.settings import Request
from minidiff.pipeline import Pipeline, load
from minidiff.samplers import sample_loop
from minidiff.utils.errors import MinidiffError

__all__ = ["PICTURES", "Denoising", "Lab"]

# The pictures kept per update, in the page's order; the prediction is min-max scaled per image
# (eps and v have unit variance, so clipping them to [-1, 1] would hide most of them)
PICTURES = ("x_t", "prediction", "x0_theta", "x_s")


@dataclass
class Denoising:
    """One sampling run's kept pictures: `pictures[name]` is uint8 (K, n, H, W, 3) for K updates."""

    request: Request
    steps: list[tuple[int, int]]  # (t, s) of each update k = 1..K
    pictures: dict[str, np.ndarray]
    final: np.ndarray  # uint8 (n, H, W, 3): the batch's images (a latent run's decoded)
    width: int  # grid columns: one per class
    seconds: float
    prediction: str  # "eps" or "v": what the network predicts
    texts: list[str] = field(default_factory=list)  # the update k written out, k = 1..K

    def frame(self, k: int, i: int) -> tuple[dict[str, np.ndarray], str]:
        """Image i's pictures at update k (1..K) and the update's equation with its numbers."""
        k = min(max(int(k), 1), len(self.steps))
        i = min(max(int(i), 0), self.request.n - 1)
        return {name: self.pictures[name][k - 1, i] for name in PICTURES}, self.texts[k - 1]


class Lab:
    """The run a lab serves: its pipeline (reloaded when the checkpoint changes) and a lock."""

    def __init__(self, run: str | os.PathLike | None = None, runs_dir="runs", device="cpu"):
        self.checkpoint = resolve_checkpoint(run, runs_dir).resolve()
        self.folder: Path = self.checkpoint.parent
        self.device = device
        self.lock = threading.Lock()
        self.note = ""  # what the last reload did, for the page's status line
        self._mtime = self._stat()
        self._pipe = load(self.checkpoint, device=device)
        self.schedule = reference_schedule(self._pipe.config)

    @property
    def pipe(self) -> Pipeline:
        """The pipeline, reloaded first if the checkpoint changed; call it holding `lock`."""
        mtime = self._stat()
        if mtime != self._mtime:
            try:
                self._pipe = load(self.checkpoint, device=self.device)
                self.schedule = reference_schedule(self._pipe.config)
                self.note = f"reloaded {self.checkpoint.name}: training wrote a new one"
            except (MinidiffError, OSError, RuntimeError, EOFError) as error:
                # keep the old weights; try again on the next request
                self.note = (f"kept the weights loaded before: the new {self.checkpoint.name} "
                             f"did not load ({str(error).splitlines()[0][:120]})")
                return self._pipe
            self._mtime = mtime
        return self._pipe

    def _stat(self) -> float | None:
        try:
            return self.checkpoint.stat().st_mtime_ns
        except OSError:
            return None  # mid-rename, or moved away: keep what is loaded

    def denoise(self, request: Request) -> Denoising:
        """Sample `request` once, keeping every update's pictures for the timeline."""
        with self.lock:
            pipe = self.pipe
            kept = []
            start = time.perf_counter()
            c = pipe.contexts(request.n, request.classes, request.mix)
            x0, _, _ = sample_loop(pipe.model, pipe.schedule, (request.n, *pipe.sample_shape), c,
                                   request.config, seed=request.seed, on_update=kept.append)
            pictures, final = _pictures(pipe, kept, x0)
            seconds = time.perf_counter() - start
            schedule = self.schedule
        steps = [(u.t, u.s) for u in kept]
        k_classes = len(request.classes or request.mix or [])
        texts = [update_text(request.config.sampler, t, s, schedule, request.config.eta,
                             steps[k - 1][0] if k else None) for k, (t, s) in enumerate(steps)]
        return Denoising(request, steps, pictures, final, columns(request.n, k_classes), seconds,
                         getattr(pipe.model, "prediction", "eps"), texts)


def _pictures(pipe: Pipeline, kept: list, x0: torch.Tensor):
    """uint8 pictures of every kept update, and of the final images."""
    stacked = {name: torch.stack([getattr(u, name) for u in kept]) for name in PICTURES}
    K, n = stacked["x_t"].shape[:2]
    flat = {name: x.flatten(0, 1) for name, x in stacked.items()}  # (K n, C, H, W)
    if pipe.decoder is not None:  # a latent run: each latent beside its decoding
        size = pipe.image_shape[-1]
        shown = {name: beside(x, pipe.decoder.decode(x)) for name, x in flat.items()
                 if name != "prediction"}
        shown["prediction"] = latent_picture(flat["prediction"], size)
        final = pipe.decoder.decode(x0)
    else:
        shown, final = dict(flat), x0
    pictures = {}
    for name in PICTURES:
        normalize = "per-image" if name == "prediction" else "clip"
        pixels = to_uint8(shown[name], normalize)  # (K n, H, W, 3)
        pictures[name] = pixels.reshape(K, n, *pixels.shape[1:])
    return pictures, to_uint8(final, "clip")
