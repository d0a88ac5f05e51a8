"""Training the autoencoder of `minidiff/autoencoder.py`: `train_autoencoder(AutoencoderConfig)`,
what `python -m minidiff train-autoencoder` runs.

Each step: a batch x of training images, eps ~ N(0, I) of the latent's shape, and a gradient step
on `autoencoder_loss(x, D(mean + exp(logvar / 2) eps), mean, logvar)`, with AdamW, 50 warm-up
steps and a cosine decay to 0. Every draw of step s is a function of (seed, s)
(`minidiff.training.batches.generator`), so a run resumed from its checkpoint ends with exactly
the weights of an uninterrupted one.

At every checkpoint (every --checkpoint-every steps, at the end, on Ctrl-C) the trainer also
estimates the latent scale factor (1 / std of the training latents) into the weights, measures
the PSNR on the held-out images (a seeded split, `minidiff.evaluation.classifier.split`), and draws
the reconstructions grid. The run folder, like a diffusion run's (`minidiff.training.runs`):

    runs/autoencoder-NAME/
      config.json, metrics.jsonl, .lock   as for `train`
      checkpoint.pt       kind "autoencoder": weights (scale factor included), optimizer, step
      reconstructions.png held-out originals, each above its reconstruction, one column per class
      autoencoder.json    step, held-out PSNR (dB), scale factor

Tutorial: tutorials/09_latent_diffusion.py.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.autoencoder import Autoencoder, autoencoder_loss, estimate_scale, psnr, reconstruct
from minidiff.autoencoder_config import (AUTOENCODER_KIND, SESSION_FIELDS, AutoencoderConfig,
                                         check_autoencoder_config, network_settings)
from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.data.images import by_class, columns, save_grid, to_uint8
from minidiff.evaluation.classifier import split
from minidiff.training.batches import generator
from minidiff.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from minidiff.training.guards import all_finite, deferred_interrupt, writing
from minidiff.training.progress import Progress
from minidiff.training.runs import MetricsLog, claim_out, resume_checkpoint, write_config
from minidiff.training.config import fitted_total
from minidiff.utils.atomic import write_json
from minidiff.utils.device import resolve_device
from minidiff.utils.errors import MinidiffError

WARMUP_STEPS = 50
SCALE_IMAGES = 2048  # training images the scale factor is estimated on
PER_CLASS = 4  # originals (each above its reconstruction) per column of the grid
BATCH, NOISE = 2, 3  # generator streams: other numbers than `batches.ORDER, NOISE`
CALIBRATION_STEPS = 5  # steps timed to fit the step count to --minutes


def train_autoencoder(config: AutoencoderConfig, on_step=None) -> AutoencoderTrainer:
    """Train as `config` says; returns the trainer (its `model`, `step`, `psnr`, `out`).
    `on_step(step)` runs after every step (a test's hook, as `minidiff.training.train`'s)."""
    trainer = AutoencoderTrainer(config)
    try:
        trainer.run(on_step)
    finally:
        trainer.close()
    return trainer


def default_out(runs_dir: str = "runs") -> Path:
    return Path(runs_dir) / time.strftime("autoencoder-%Y%m%d-%H%M%S")


class AutoencoderTrainer:
    """One autoencoder run: data and split, network, optimizer, a resumed checkpoint, the folder."""

    def __init__(self, config: AutoencoderConfig):
        check_autoencoder_config(config)
        self.config, self.threads_before = config, torch.get_num_threads()
        self.lock, self.step, self.total, self.psnr = None, 0, config.steps, None
        self.finished = False  # a resumed run with no steps left
        try:
            self._setup(config)
        except BaseException:
            self.close()
            raise

    def _setup(self, c: AutoencoderConfig) -> None:
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = resolve_device(c.device)
        self.out = Path(c.out or default_out())
        self.dataset = load_dataset(c.data, c.labels, None, c.image_size, c.n_images, seed=0)
        train_idx, held_idx = split(self.dataset, c.holdout, seed=0)  # seed 0: the same split
        if len(train_idx) < c.batch_size:
            raise MinidiffError(f"--batch-size {c.batch_size} is larger than the training split "
                                f"({len(train_idx)} images); pass a smaller one")
        self.train_images = self.dataset.images[torch.from_numpy(train_idx)].to(self.device)
        self.held_out = torch.from_numpy(np.sort(held_idx))
        self.data_hash = dataset_hash(self.dataset)
        saved = self._check_resume() if c.resume else None
        torch.manual_seed(c.seed)  # the initial weights
        channels = self.dataset.images.shape[1]
        self.model = Autoencoder(**network_settings(c, channels)).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c.lr,
                                           fused=self.device.type in ("cpu", "cuda"))
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.step = int(saved["step"])
            self.total = c.steps or saved["config"]["autoencoder"]["steps"]
        if saved is not None and self.step >= self.total:
            if self.total == saved["config"]["autoencoder"]["steps"] == self.step:
                self.finished = True  # nothing to do, nothing written: `run` says so
                return
            raise MinidiffError(f"--steps {self.total}: the run in {self.out} is already at step "
                                f"{self.step}; pass --steps above {self.step} to train it longer")
        with writing(self.out, "the run folder"):
            self.lock = claim_out(self.out, c.resume, say=print)
            try:
                write_config(self.out, self.run_config())
                self.metrics = MetricsLog(self.out, self.step if saved else None, say=print)
            except BaseException:
                if self.lock.created:
                    shutil.rmtree(self.out, ignore_errors=True)
                raise

    def _check_resume(self) -> dict:
        from minidiff.training.latents import load_autoencoder  # checks the whole file

        path = resume_checkpoint(self.out)
        _, saved, _ = load_autoencoder(path)
        if saved.get("data_hash") != self.data_hash:
            raise MinidiffError(f"{path} was trained on other data; resume with the same "
                                "--data/--labels/--n-images/--image-size, or use a new --out")
        for name, value in saved["config"].get("autoencoder", {}).items():
            if name not in SESSION_FIELDS and getattr(self.config, name, value) != value:
                raise MinidiffError(f"{path} was trained with {name}={value!r} but this run asks "
                                    f"for {getattr(self.config, name)!r}; drop that flag to "
                                    "resume, or train into a new --out")
        return saved

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
        torch.set_num_threads(self.threads_before)

    def run_config(self) -> dict:
        c = self.config
        return {"autoencoder": dataclasses.asdict(c) | {"out": str(self.out), "steps": self.total},
                "network": network_settings(c, self.dataset.images.shape[1]),
                "image_size": c.image_size, "classes": list(self.dataset.classes),
                "data": {"name": self.dataset.name, "n": len(self.dataset),
                         "hash": self.data_hash, "held_out": len(self.held_out)},
                "torch": str(torch.__version__)}

    # %% one step and the loop

    def learning_rate(self, step: int) -> float:
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        if self.total is None:
            return self.config.lr * warm
        return self.config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.total)))

    def train_step(self, step: int) -> torch.Tensor:
        c = self.config
        g = generator(c.seed, BATCH, step)
        x = self.train_images[torch.randint(len(self.train_images), (c.batch_size,), generator=g)
                              .to(self.device)]
        side = c.image_size // c.factor
        eps = torch.randn((c.batch_size, c.latent_channels, side, side),
                          generator=generator(c.seed, NOISE, step)).to(self.device)
        reconstruction, mean, logvar = self.model(x, eps)
        loss, _, _ = autoencoder_loss(x, reconstruction, mean, logvar, c.loss, c.kl_weight)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def run(self, on_step=None) -> None:
        if self.finished:
            print(f"{self.out} is finished: it trained all {self.step:,} steps; to train it "
                  f"longer, resume with more steps, e.g. --resume --out {self.out} --steps "
                  f"{2 * self.step}", flush=True)
            return
        c, first, start = self.config, self.step, time.perf_counter()
        losses, bar = [], Progress(c.progress, self.total, self.step)
        calibration_start, fitting = None, self.total is None
        self.model.train()
        with deferred_interrupt() as interrupt, bar:
            try:
                while self.total is None or self.step < self.total:
                    losses.append(self.train_step(self.step))
                    self.step += 1
                    # --minutes: the step count from the rate of the steps after the first (a
                    # warm-up), fitted after CALIBRATION_STEPS and again at every log line, as
                    # the rate drifts (a fit on 5 steps alone overran a 450 s budget by 14%)
                    if fitting and self.step == first + 1:
                        calibration_start = time.perf_counter()
                    elif fitting and (self.step == first + 1 + CALIBRATION_STEPS or (
                            self.total is not None and self.step % c.log_every == 0)):
                        self._fit_total(calibration_start, start, self.step - first - 1)
                        bar.update(self.step, total=self.total)
                    if self.step % c.log_every == 0 or self.step == self.total:
                        self._log(losses, bar, first, start)
                        losses = []
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0 \
                            and self.step != self.total:
                        self.save()
                    if on_step is not None:
                        on_step(self.step)
                    if interrupt["hit"]:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if self.step > first:
                    self.save()
                    bar.print(f"interrupted at step {self.step}: checkpoint saved in {self.out}; "
                              f"continue with --resume --out {self.out}")
                raise
        self.save()
        seconds = time.perf_counter() - start
        print(f"trained {self.step - first} steps in {seconds:.0f} s; held-out PSNR "
              f"{self.psnr:.2f} dB on {len(self.held_out)} images, scale factor "
              f"{float(self.model.scale_factor):.4f}; run folder {self.out}, reconstructions "
              f"{self.out / 'reconstructions.png'}", flush=True)

    def _fit_total(self, calibration_start: float, start: float, timed: int) -> None:
        """The step count that fills --minutes at the rate of the `timed` steps since the first
        (the first is slower: torch's warm-up), as `minidiff.training.trainer` fits its own."""
        now = time.perf_counter()
        self.total = fitted_total(self.step, timed, now - calibration_start, now - start,
                                  self.config.minutes)

    def _log(self, losses, bar: Progress, first: int, start: float) -> None:
        loss = float(torch.stack(losses).mean())
        if not math.isfinite(loss):
            raise MinidiffError(f"the loss became {loss} by step {self.step}: training diverged; "
                                "lower --lr")
        with writing(self.out, "metrics.jsonl"):
            self.metrics.write({"step": self.step, "loss": loss,
                                "lr": self.optimizer.param_groups[0]["lr"],
                                "time_s": round(time.perf_counter() - start, 3)})
        bar.update(self.step, loss=loss, rate=(self.step - first) /
                   (time.perf_counter() - start))

    # %% the checkpoint, the scale factor, the PSNR and the grid

    def save(self) -> None:
        """Scale factor, PSNR, grid and checkpoint, each written atomically."""
        model = self.model
        model.scale_factor.fill_(estimate_scale(model, self.train_images[:SCALE_IMAGES]))
        held = self.dataset.images[self.held_out].to(self.device)
        reconstructions = reconstruct(model, held)
        self.psnr = float(psnr(held, reconstructions).mean())
        model.train()
        state = {"model": model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if not all_finite(state):
            raise MinidiffError(f"the weights are not finite at step {self.step}: training "
                                "diverged; lower --lr")
        summary = {"step": self.step, "psnr_db": self.psnr, "held_out": len(self.held_out),
                   "scale_factor": float(model.scale_factor)}
        with writing(self.out, "the checkpoint"):
            self._save_grid(held.cpu(), reconstructions.cpu())
            write_json(self.out / "autoencoder.json", summary)
            save_checkpoint(self.out / CHECKPOINT_NAME, {
                **state, "kind": AUTOENCODER_KIND, "config": self.run_config(), "step": self.step,
                "data_hash": self.data_hash, "psnr_db": self.psnr,
                "classes": list(self.dataset.classes)})

    def _save_grid(self, held: torch.Tensor, reconstructions: torch.Tensor) -> None:
        pixels, nrow = reconstruction_grid(held, reconstructions,
                                           self.dataset.contexts[self.held_out])
        save_grid(pixels, self.out / "reconstructions.png", nrow=nrow)


def reconstruction_grid(images, reconstructions, contexts, per_class: int = PER_CLASS):
    """(pixels, nrow) for `save_grid`: one column per class (`minidiff.data.images.columns`),
    each original directly above its reconstruction; unlabelled images (or one class) fill 8."""
    originals, rebuilt = to_uint8(images), to_uint8(reconstructions)
    labels = contexts.argmax(1).numpy() if contexts.shape[1] else np.zeros(len(images), int)
    if len(np.unique(labels)) < 2:  # unlabelled, or one class: 8 columns of pairs
        labels = np.arange(len(images)) % min(8, len(images))
    groups = []
    for k in range(int(labels.max()) + 1 if len(labels) else 0):
        rows = np.flatnonzero(labels == k)[:per_class]
        pairs = np.stack((originals[rows], rebuilt[rows]), 1)  # (r, 2, H, W, C)
        groups.append(pairs.reshape(-1, *originals.shape[1:]))
    groups = [g for g in groups if len(g)] or [originals[:0]]
    pixels = by_class(groups)
    return pixels, columns(len(pixels), len(groups))
