"""The trainer: set a run up, take one step, and run the loop around the steps.

`Trainer(config)` does the setup, in an order chosen so that bad input costs nothing: check the
configuration, load the data, check the batch against it and a resumed checkpoint against the
configuration, and only then claim the run folder (an OS lock: one writer per folder) and write
into it. `Trainer.train_step` is one step of DDPM Algorithm 1; `Trainer.run` is the loop, read top
to bottom (nanoGPT's shape): step, fit the length to --minutes, log, preview and checkpoint, stop.

Costs kept off the hot path: the loss stays a tensor and is read (one sync) only when a metrics
line is written; the weights are checked finite only when a checkpoint is written, so no
checkpoint ever holds a NaN. Rank 0 alone prints and writes (`minidiff.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.ema import EMA, has_batchnorm, recalibrate_batchnorm
from minidiff.noising import q_sample
from minidiff.schedules import make_schedule
from minidiff.training import distributed
from minidiff.training.batches import Batches
from minidiff.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from minidiff.training.config import SESSION_FIELDS, TrainConfig, check_config, learning_rate
from minidiff.training.guards import all_finite, deferred_interrupt, divergence_cause, writing
from minidiff.training.progress import Progress
from minidiff.training.runs import (MetricsLog, claim_out, default_out, preview, resume_checkpoint,
                                    save_preview, write_config)
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.device import fast_bf16, resolve_device
from minidiff.utils.errors import MinidiffError

CALIBRATION_STEPS = 10  # steps timed to fit the step count to --minutes
BUDGET_SHARE = 0.95  # fit the step count to this share of --minutes: previews and saving take time


def train(config: TrainConfig, on_step=None) -> Trainer:
    """Train as `config` says; returns the `Trainer` (its `model`, `ema`, `step`, `out`).

    `on_step(step)` is called after every step (a test's hook: raising KeyboardInterrupt there
    stops the run as Ctrl-C would, with a checkpoint).
    """
    trainer = Trainer(config)
    trainer.run(on_step)
    return trainer


class Trainer:
    """One training run: its configuration, data, network, optimizer, run folder and step.

    Only the Trainer changes its own state (`step`, `total`, the weights); `run` is the loop.
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

    def close(self) -> None:
        """Release the run folder, leave the process group, give torch back its thread count."""
        if self.lock is not None:
            self.lock.release()
        distributed.teardown(self.env)
        torch.set_num_threads(self.threads_before)

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

    def say(self, message: str) -> None:
        """A line for the user (rank 0 only); the loop prints above its progress bar instead."""
        if self.env.is_main:
            print(message, flush=True)

    # %% setup

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
        images = self.dataset.images
        self.unet_config = UnetConfig(arch=c.arch, in_channels=images.shape[1], n_feat=c.n_feat,
                                      n_cfeat=self.dataset.contexts.shape[1],
                                      height=images.shape[-1])
        self.data_hash = dataset_hash(self.dataset)
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
        return None  # fitted to --minutes after CALIBRATION_STEPS

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

    def _build(self) -> None:
        c, device = self.config, self.device
        cuda = device.type == "cuda"
        self.schedule = make_schedule(c.schedule, c.timesteps, c.beta1, c.beta2, device)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = build_unet(self.unet_config).to(device)
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
                "world_size": self.env.world_size, "torch": str(torch.__version__)}

    # %% one step

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on the batch of `step`; returns the loss as a tensor (no sync)."""
        batch = self.batches(step)
        x_t = q_sample(batch.x0, batch.t, batch.eps, self.schedule)  # DDPM eq. 4
        t_normalised = batch.t.to(self.device, non_blocking=True).float() / self.config.timesteps
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            eps_theta = self.net(x_t, t_normalised, batch.c)
        loss = F.mse_loss(eps_theta.float(), batch.eps)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, step, self.total,
                                        self.batches.steps_per_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    # %% the run

    def run(self, on_step=None) -> None:
        """Train from `step` to `total` (fitted to --minutes when None), then save, preview and
        report. Ctrl-C or SIGTERM: finish the step, save, re-raise KeyboardInterrupt."""
        try:
            if self.finished:
                self.say(f"{self.out} is finished: it trained all {self.step:,} steps; to train "
                         f"it longer, resume with more steps, e.g. --resume --out {self.out} "
                         f"--steps {2 * self.step}")
                return
            self._loop(on_step)
        finally:
            self.close()

    def _loop(self, on_step) -> None:
        c, env = self.config, self.env
        first_step, start = self.step, time.perf_counter()
        budget = c.minutes * 60 if c.minutes else None
        bar = Progress(c.progress and env.is_main, self.total, self.step)
        window, calibration_start, consistent = _Window(self.device), None, True
        self.model.train()
        with deferred_interrupt() as interrupt, bar:
            try:
                while self.total is None or self.step < self.total:
                    # one optimizer step; an exception inside it leaves a half step: not saved
                    consistent = False
                    window.add(self.train_step(self.step))
                    self.step += 1
                    consistent = True
                    # fit the step count to --minutes, timed after the first step's warm-up
                    if self.total is None:
                        if self.step == first_step + 1:
                            calibration_start = time.perf_counter()
                        elif self.step == first_step + 1 + CALIBRATION_STEPS:
                            self._fit_total(calibration_start, start, budget)
                            bar.update(self.step, total=self.total)
                    # log: the loss's one sync per window
                    if self.step % c.log_every == 0 or self.step == self.total:
                        self._log(window, bar, first_step, start)
                        window = _Window(self.device)
                    # previews and checkpoints every N steps (the last step's come after the loop)
                    if self.step != self.total:
                        self._periodic(bar)
                    if on_step is not None:
                        on_step(self.step)
                    # stop on Ctrl-C or at the end of the time budget, every rank at the same step
                    stop = interrupt["hit"]
                    over = budget is not None and time.perf_counter() - start > budget
                    if env.enabled:
                        stop = distributed.any_rank(env, stop, self.device)
                        over = distributed.any_rank(env, over, self.device)
                    if stop:
                        raise KeyboardInterrupt
                    if over:
                        bar.print(f"--minutes {c.minutes} reached at step {self.step}")
                        break
            except KeyboardInterrupt:
                if consistent and self.step > first_step:
                    self.save()
                    bar.print(f"interrupted at step {self.step}: checkpoint saved in {self.out}; "
                              f"continue with --resume --out {self.out}")
                raise
            if window.steps:
                self._log(window, bar, first_step, start)
        # the end: the last checkpoint and preview, and what was done
        if self.step > first_step:
            self.save()
            grid = self.write_preview()
            seconds = time.perf_counter() - start
            speed = (self.step - first_step) * c.batch_size / seconds
            self.say(f"trained {self.step - first_step} steps in {seconds:.0f} s "
                     f"({speed:.0f} images/s); run folder {self.out}, samples {grid}")

    def _fit_total(self, calibration_start: float, start: float, budget: float) -> None:
        now = time.perf_counter()
        rate = CALIBRATION_STEPS / (now - calibration_start)  # steps per second
        remaining = budget * BUDGET_SHARE - (now - start)
        total = self.step + max(0, int(remaining * rate))
        self.total = distributed.broadcast_object(self.env, total)

    def _log(self, window: _Window, bar: Progress, first_step: int, start: float) -> None:
        """Write one metrics line (rank 0) and refresh the bar with the run's average rate."""
        loss_sum = window.loss_sum
        if self.env.enabled:
            torch.distributed.all_reduce(loss_sum)
            loss_sum = loss_sum / self.env.world_size
        loss = float(loss_sum) / window.steps  # the one sync of the window
        if not math.isfinite(loss):
            raise self._diverged(f"the loss became {loss} by step {self.step}")
        now = time.perf_counter()
        rate = window.steps / (now - window.start)
        if self.env.is_main:
            with writing(self.out, "metrics.jsonl", self._kept()):
                self.metrics.write({
                    "step": self.step, "epoch": round(self.step / self.batches.steps_per_epoch, 4),
                    "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": rate * self.config.batch_size, "time_s": round(now - start, 3)})
        bar.update(self.step, loss=loss, rate=(self.step - first_step) / (now - start))

    def _periodic(self, bar: Progress) -> None:
        """Previews and checkpoints every N steps."""
        c = self.config
        if c.sample_every and self.step % c.sample_every == 0:
            grid = self.write_preview()
            if grid is not None:
                bar.print(f"step {self.step}: samples in {grid}")
        if c.checkpoint_every and self.step % c.checkpoint_every == 0:
            self.save()

    def _diverged(self, what: str) -> MinidiffError:
        """The error that stops a diverged run, naming its likely cause."""
        cause = divergence_cause(self.dataset, self.config)
        return MinidiffError(f"{what}: training diverged, {cause}; {self._kept()}")

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint (step {self.saved_step}, finite) is kept"

    def sampling_model(self) -> torch.nn.Module:
        """The network previews and users sample: the EMA weights if kept, in eval mode.

        With BatchNorm (the course's network) the EMA's running statistics are re-estimated for
        its own weights on the last 8 training batches (see `minidiff.ema`).
        """
        if self.ema is None:
            return self.model.eval()
        if has_batchnorm(self.ema.model):
            steps = range(max(0, self.step - 8), max(self.step, 1))
            recalibrate_batchnorm(self.ema.model, (self._inputs(s) for s in steps))
        return self.ema.model

    def _inputs(self, step: int):
        batch = self.batches(step)
        x_t = q_sample(batch.x0, batch.t, batch.eps, self.schedule).float()
        return x_t, batch.t.to(self.device).float() / self.config.timesteps, batch.c

    def save(self) -> None:
        """Write checkpoint.pt atomically (rank 0); BatchNorm statistics are rank 0's."""
        distributed.sync_buffers(self.env, self.model)
        if not self.env.is_main:
            return
        ema = self.sampling_model() if self.ema is not None else None
        self.model.train()
        state = {"model": self.model.state_dict(),
                 "ema": None if ema is None else ema.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if not all_finite(state):
            raise self._diverged(f"the weights are not finite at step {self.step}")
        with writing(self.out, CHECKPOINT_NAME, self._kept()):
            save_checkpoint(self.out / CHECKPOINT_NAME, {
                **state, "config": self.run_config(), "classes": list(self.dataset.classes),
                "ema_updates": 0 if ema is None else self.ema.updates, "step": self.step,
                "data_hash": self.data_hash})
        self.saved_step = self.step

    def write_preview(self) -> Path | None:
        if not self.env.is_main:
            return None
        model = self.sampling_model()
        images = preview(model, self.schedule, n_classes=self.unet_config.n_cfeat,
                         shape=tuple(self.dataset.images.shape[1:]), seed=self.config.seed)
        self.model.train()
        with writing(self.out, "the preview", self._kept()):
            return save_preview(self.out, self.step, images,
                                n_classes=self.unet_config.n_cfeat)


class _Window:
    """The loss summed on the device since the last metrics line, and since when."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.steps, self.start = 0, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1
