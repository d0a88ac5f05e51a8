"""Setting a training run up, fresh or resumed: what the Trainer does before its first step.

`TrainerSetup(config)` works in an order chosen so that bad input costs nothing: check the
configuration, load the data and check the batch against it, on --resume check the checkpoint
against the configuration, build the network and optimizer (and restore the checkpoint into
them), and only then claim the run folder (an OS lock: one writer per folder) and write
config.json into it. `minidiff.training.trainer.Trainer` adds the step and the loop.

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.ema import EMA
from minidiff.schedules import make_schedule
from minidiff.training import distributed
from minidiff.training.batches import Batches
from minidiff.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from minidiff.training.config import SESSION_FIELDS, TrainConfig, check_config
from minidiff.training.guards import writing
from minidiff.training.latents import encode_dataset
from minidiff.training.runs import (MetricsLog, claim_out, default_out, resume_checkpoint,
                                    write_config)
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.device import fast_bf16, resolve_device
from minidiff.utils.errors import MinidiffError


class TrainerSetup:
    """A run's configuration, data, network, optimizer, run folder and step, before training.

    Fresh, `step` is 0; resumed, it is the checkpoint's and the weights are its. `finished` is
    True when a resumed run has no steps left (nothing is then written).
    """

    def __init__(self, config: TrainConfig):
        check_config(config)
        self.config, self.env = config, distributed.from_environment()
        self.threads_before = torch.get_num_threads()  # restored when the run ends
        self.step, self.total, self.saved_step = 0, None, None
        self.finished, self.lock, self.metrics = False, None, None
        try:
            self._setup(config)
        except BaseException:
            self.close()
            raise

    def _setup(self, config: TrainConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = distributed.setup(self.env, resolve_device(config.device))
        self.out = Path(distributed.broadcast_object(self.env, str(config.out or default_out())))
        self._load_data()
        saved = self._check_resume() if config.resume else None
        self._build()
        if saved is not None:
            self._restore(saved)
        if not self.finished:  # a finished run writes nothing: `run` says so and stops
            self._claim_folder(resumed=saved is not None)

    def close(self) -> None:
        """Release the run folder, leave the process group, give torch back its thread count."""
        if self.lock is not None:
            self.lock.release()
        distributed.teardown(self.env)
        torch.set_num_threads(self.threads_before)

    def say(self, message: str) -> None:
        """A line for the user (rank 0 only); the loop prints above its progress bar instead."""
        if self.env.is_main:
            print(message, flush=True)

    # %% the data

    def _load_data(self) -> None:
        c = self.config
        # seed 0, not c.seed: the built-in sprites and any subset stay the same across seeds
        self.dataset = load_dataset(c.data, c.labels, c.classes, c.image_size, c.n_images, seed=0)
        if c.batch_size > len(self.dataset):
            raise MinidiffError(f"--batch-size {c.batch_size} is larger than the data "
                                f"({len(self.dataset)} images); pass --batch-size "
                                f"{len(self.dataset)} or less")
        if c.batch_size % self.env.world_size:
            raise MinidiffError(f"--batch-size {c.batch_size} does not split over "
                                f"{self.env.world_size} processes; pass a multiple of it")
        self.data_hash = dataset_hash(self.dataset)  # of the pixels, a latent run's too
        self.latents = None  # latent diffusion (issue 14): the images become their latents
        if c.autoencoder:
            self.dataset, self.latents = encode_dataset(self.dataset, c.autoencoder, self.device)
        images = self.dataset.images
        self.unet_config = UnetConfig(arch=c.arch, in_channels=images.shape[1], n_feat=c.n_feat,
                                      n_cfeat=self.dataset.contexts.shape[1],
                                      height=images.shape[-1], patch=c.patch, dropout=c.dropout,
                                      prediction=c.prediction)
        self.batches = Batches(images.to(self.device), self.dataset.contexts.to(self.device),
                               T=c.timesteps, batch_size=c.batch_size, seed=c.seed,
                               context_drop=c.context_drop, hflip=c.hflip, rank=self.env.rank,
                               world_size=self.env.world_size)
        self.total = self._total_steps()

    def _total_steps(self) -> int | None:
        if self.config.steps is not None:
            return self.config.steps
        if self.config.epochs is not None:
            return max(1, round(self.config.epochs * self.batches.steps_per_epoch))
        return None  # fitted to --minutes by the loop (`Trainer._fit_total`)

    # %% a resumed run: its checkpoint checked against this run before anything is built

    def _check_resume(self) -> dict:
        path = resume_checkpoint(self.out)
        saved = load_checkpoint(path, map_location=self.device)
        config = saved.get("config", {})
        ours = dataclasses.asdict(self.unet_config)
        if config.get("unet") != ours:
            theirs = config.get("unet") or {}
            raise MinidiffError(
                f"{path} holds a {theirs.get('arch')} network (n_feat {theirs.get('n_feat')}, "
                f"{theirs.get('n_cfeat')} classes, {theirs.get('height')} px) but this run asks "
                f"for {ours['arch']} (n_feat {ours['n_feat']}, {ours['n_cfeat']} classes, "
                f"{ours['height']} px); drop the flags that differ, or train into a new --out")
        if saved.get("data_hash") != self.data_hash:
            raise MinidiffError(f"{path} was trained on other data (hash {saved.get('data_hash')},"
                                f" now {self.data_hash}); resume with the same --data/--labels/"
                                "--classes/--n-images, or train into a new --out")
        if self.latents is not None and (config.get("autoencoder") or {}).get("sha256") != \
                self.latents.record["sha256"]:
            raise MinidiffError(f"{path} was trained on the latents of another autoencoder (or "
                                f"{self.config.autoencoder} was retrained since); resume with the "
                                "one it trained on, or train into a new --out")
        for name, value in config.get("train", {}).items():
            if name not in SESSION_FIELDS and getattr(self.config, name, value) != value:
                raise MinidiffError(f"{path} was trained with {name}={value!r} but this run asks "
                                    f"for {getattr(self.config, name)!r}; drop that flag to "
                                    "resume, or train into a new --out")
        self._check_length(int(saved["step"]), config.get("train", {}).get("steps"))
        before = config.get("train", {}).get("threads")
        if self.config.threads != before:
            self.say(f"note: --threads {self.config.threads or 'default'} differs from the "
                     f"{before or 'default'} this run trained with: allowed, but float sums round "
                     "differently, so the weights will not be bit-for-bit an uninterrupted run's")
        return saved

    def _check_length(self, done: int, saved_total: int | None) -> None:
        """A resumed run must have steps left: a finished run is reported as such (`run` says how
        to extend it), and a length the run has already passed is refused."""
        total = self.total if self.total is not None else saved_total
        if total is None or done < total:
            return
        if total == saved_total and done == total:
            self.finished = True
            return
        flag = f"--epochs {self.config.epochs:g}" if self.config.epochs else f"--steps {total}"
        raise MinidiffError(f"{flag}: the run in {self.out} is already at step {done}; pass "
                            f"--steps above {done} to train it longer (nothing was changed)")

    # %% the network and its optimizer

    def _build(self) -> None:
        c, device = self.config, self.device
        cuda = device.type == "cuda"
        self.schedule = make_schedule(c.schedule, c.timesteps, c.beta1, c.beta2, device)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = build_unet(self.unet_config, alpha_bar=self.schedule.alpha_bar).to(device)
        self.channels_last = cuda if c.channels_last is None else c.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast = c.precision == "bf16" or (c.precision == "auto" and fast_bf16(device))
        self.ema = EMA(self.model, c.ema_decay) if c.ema_decay > 0 else None
        self.net = distributed.wrap(self.env, self.model, device)
        if c.compile:
            self.net = torch.compile(self.net)
        params = list(self.model.parameters())
        if c.optimizer == "adam":  # the course: torch.optim.Adam, no weight decay
            self.optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        else:  # fused: one kernel for all parameters, on CPU too
            self.optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay,
                                               fused=device.type in ("cpu", "cuda"))

    # %% a resumed run: its weights, optimizer and step

    def _restore(self, saved: dict) -> None:
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.ema is not None:
                self.ema.model.load_state_dict(saved["ema"])
                self.ema.updates = int(saved["ema_updates"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise MinidiffError(f"{self.out / CHECKPOINT_NAME} does not match this run "
                                f"({type(error).__name__}: {str(error).splitlines()[0][:100]}); "
                                "train into a new --out") from None
        self.step = self.saved_step = int(saved["step"])
        if saved["config"]["train"].get("steps") and self.total is None:
            self.total = saved["config"]["train"]["steps"]  # fitted to --minutes before

    # %% the run folder

    def _claim_folder(self, resumed: bool) -> None:
        """Lock the run folder (rank 0), clean it, write config.json and open metrics.jsonl; a
        refusal on rank 0 is raised on every rank."""
        error = None
        if self.env.is_main:
            try:
                with writing(self.out, "the run folder"):
                    self.lock = claim_out(self.out, self.config.resume, say=self.say)
                    try:
                        write_config(self.out, self.run_config())
                        resume_step = self.step if resumed else None
                        self.metrics = MetricsLog(self.out, resume_step, say=self.say)
                    except BaseException:
                        if self.lock.created:  # leave no empty run folder behind
                            shutil.rmtree(self.out, ignore_errors=True)
                        raise
            except MinidiffError as e:
                error = str(e)
        if error := distributed.broadcast_object(self.env, error):
            raise MinidiffError(error)

    def run_config(self) -> dict:
        """Everything needed to rebuild, sample or resume the run, as plain types."""
        s = self.schedule
        train = dataclasses.asdict(self.config) | {"out": str(self.out), "steps": self.total}
        if self.total is not None:
            train["epochs"] = None
        return {"train": train, "unet": dataclasses.asdict(self.unet_config),
                "schedule": {"kind": s.kind, "T": s.T, "beta1": self.config.beta1,
                             "beta2": self.config.beta2},
                "classes": list(self.dataset.classes),
                "data": {"name": self.dataset.name, "n": len(self.dataset), "hash": self.data_hash},
                "world_size": self.env.world_size, "torch": str(torch.__version__)} | (
                    {"autoencoder": self.latents.record} if self.latents is not None else {})

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples as images: a latent run's decoded by its autoencoder, a pixel run's as they
        are."""
        return x if self.latents is None else self.latents.decode(x)
