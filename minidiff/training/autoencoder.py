"""Training the autoencoder of `minidiff/autoencoder.py`: `train_autoencoder(AutoencoderConfig)`,
what `python -m minidiff train-autoencoder` runs, on the diffusion trainer's loop
(`minidiff.training.trainer.Trainer.run`: the same --minutes budget, learning-rate schedule, logs,
checkpoints and Ctrl-C); only the setup, the step and what a checkpoint holds are its own.

Each step: a batch x of training images, eps ~ N(0, I) of the latent's shape, and a gradient step
on `autoencoder_loss(x, D(mean + exp(logvar / 2) eps), mean, logvar)`. Every draw of step s is a
function of (seed, s) (`minidiff.training.batches.generator`), so a resumed run ends with exactly
the weights of an uninterrupted one.

At every checkpoint the trainer also estimates the latent scale factor (1 / std of the training
latents) into the weights, measures the PSNR on the held-out images (a seeded split,
`minidiff.evaluation.classifier.split`) and draws the reconstructions grid:

    runs/autoencoder-NAME/
      config.json, metrics.jsonl, .lock   as for `train` (`minidiff.training.runs`)
      checkpoint.pt       kind "autoencoder": weights (scale factor included), optimizer, step
      reconstructions.png held-out originals, each above its reconstruction, one column per class
      autoencoder.json    step, held-out PSNR (dB), scale factor

Tutorial: tutorials/09_latent_diffusion.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from minidiff.autoencoder import (
    AUTOENCODER_KIND,
    Autoencoder,
    autoencoder_loss,
    estimate_scale,
    load_autoencoder,
    psnr,
    reconstruct,
)
from minidiff.checkpoint import CHECKPOINT_NAME, save_checkpoint
from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.data.images import by_class, columns, save_grid, to_uint8
from minidiff.evaluation.classifier import split
from minidiff.training import distributed, runs
from minidiff.training.batches import generator
from minidiff.training.config import (
    AUTOENCODER_SESSION,
    AutoencoderConfig,
    check_autoencoder_config,
    learning_rate,
    network_settings,
)
from minidiff.training.guards import all_finite, writing
from minidiff.training.trainer import Trainer
from minidiff.utils.atomic import write_json
from minidiff.utils.device import resolve_device
from minidiff.utils.errors import MinidiffError

SCALE_IMAGES = 2048  # training images the scale factor is estimated on
PER_CLASS = 4  # originals (each above its reconstruction) per column of the grid
BATCH, NOISE = 2, 3  # generator streams: other numbers than `batches.ORDER, NOISE`


def train_autoencoder(config: AutoencoderConfig, on_step=None) -> AutoencoderTrainer:
    """Train as `config` says; returns the trainer (its `model`, `step`, `psnr`, `out`).
    `on_step(step)` runs after every step (a test's hook, as `minidiff.training.train`'s)."""
    trainer = AutoencoderTrainer(config)
    trainer.run(on_step)
    return trainer


class AutoencoderTrainer(Trainer):
    """One autoencoder run: data and split, network, optimizer, a resumed checkpoint, the folder;
    then `Trainer.run`."""

    kind = AUTOENCODER_KIND

    def setup(self, c: AutoencoderConfig) -> None:
        check_autoencoder_config(c)
        self.psnr, self.env = None, distributed.Dist()  # one process: no torchrun here
        self.device = resolve_device(c.device)
        self.out = Path(c.out or runs.default_out(prefix="autoencoder-"))
        self.dataset = load_dataset(c.data, c.labels, c.classes, c.image_size, c.n_images, seed=0)
        train_idx, held_idx = split(self.dataset, c.holdout, seed=0)  # seed 0: the same split
        runs.check_batch_size(c.batch_size, len(train_idx))
        self.train_images = self.dataset.images[torch.from_numpy(train_idx)].to(self.device)
        self.held_out = torch.from_numpy(np.sort(held_idx))
        self.data_hash, self.steps_per_epoch, self.total = dataset_hash(self.dataset), None, c.steps
        saved = self.check_resume() if c.resume else None
        torch.manual_seed(c.seed)  # the initial weights
        self.model = Autoencoder(**network_settings(c, self.dataset.images.shape[1]))
        self.model = self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c.lr,
                                           fused=self.device.type in ("cpu", "cuda"))
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.step = self.saved_step = int(saved["step"])
            self.total = c.steps or saved["config"][self.kind]["steps"]
        if not self.finished:
            self.claim_folder(resumed=saved is not None)

    def check_resume(self) -> dict:
        path = runs.resume_checkpoint(self.out)
        _, saved, _ = load_autoencoder(path)  # checks the whole file
        runs.check_same_data(path, saved.get("data_hash"), self.data_hash)
        recipe = saved["config"].get(self.kind, {})
        runs.check_same_recipe(path, recipe, self.config, AUTOENCODER_SESSION)
        self.finished = runs.check_length(self.out, int(saved["step"]),
                                          self.config.steps or recipe.get("steps"),
                                          recipe.get("steps"), self.config)
        return saved

    def run_config(self) -> dict:
        c = self.config
        return {self.kind: dataclasses.asdict(c) | {"out": str(self.out), "steps": self.total},
                "network": network_settings(c, self.dataset.images.shape[1]),
                "image_size": c.image_size, "classes": list(self.dataset.classes),
                "data": {"name": self.dataset.name, "n": len(self.dataset),
                         "hash": self.data_hash, "held_out": len(self.held_out)},
                "torch": str(torch.__version__)}

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
            group["lr"] = learning_rate(c, step, self.total)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def diverged(self, what: str) -> MinidiffError:
        return MinidiffError(f"{what}: training diverged; lower --lr; {self.kept()}")

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
            raise self.diverged(f"the weights are not finite at step {self.step}")
        summary = {"step": self.step, "psnr_db": self.psnr, "held_out": len(self.held_out),
                   "scale_factor": float(model.scale_factor)}
        with writing(self.out, "the checkpoint", self.kept()):
            pixels, nrow = reconstruction_grid(held.cpu(), reconstructions.cpu(),
                                               self.dataset.contexts[self.held_out])
            save_grid(pixels, self.out / "reconstructions.png", nrow=nrow)
            write_json(self.out / "autoencoder.json", summary)
            save_checkpoint(self.out / CHECKPOINT_NAME, {
                **state, "kind": self.kind, "config": self.run_config(), "step": self.step,
                "data_hash": self.data_hash, "psnr_db": self.psnr,
                "classes": list(self.dataset.classes)})
        self.saved_step = self.step

    def write_preview(self) -> Path:
        return self.out / "reconstructions.png"  # drawn with every checkpoint

    def summary(self, shown: Path) -> str:
        return (f"; held-out PSNR {self.psnr:.2f} dB on {len(self.held_out)} images, scale "
                f"factor {float(self.model.scale_factor):.4f}, reconstructions {shown}")


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
