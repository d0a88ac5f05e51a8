"""The trainer: one step of DDPM Algorithm 1 and the loop around the steps.

`Trainer(config)` sets the run up first (`minidiff.training.trainer_setup`: the data, the
network, a resumed checkpoint, the run folder, in an order in which bad input costs nothing).
`Trainer.train_step` is one step of DDPM Algorithm 1; `Trainer.run` is the loop, read top to
bottom (nanoGPT's shape): step, fit the length to --minutes, log, preview and checkpoint, stop.

Costs kept off the hot path: the loss stays a tensor and is read (one sync) only when a metrics
line is written; the weights are checked finite only when a checkpoint is written, so no
checkpoint ever holds a NaN. Rank 0 alone prints and writes (`minidiff.training.distributed`).

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidiff.ema import has_batchnorm, recalibrate_batchnorm
from minidiff.noising import q_sample
from minidiff.training import distributed
from minidiff.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from minidiff.training.config import TrainConfig, fitted_total, learning_rate
from minidiff.training.guards import all_finite, deferred_interrupt, divergence_cause, writing
from minidiff.training.progress import Progress
from minidiff.training.runs import preview, save_preview
from minidiff.training.trainer_setup import TrainerSetup
from minidiff.utils.errors import MinidiffError

CALIBRATION_STEPS = 10  # steps timed to fit the step count to --minutes


def train(config: TrainConfig, on_step=None) -> Trainer:
    """Train as `config` says; returns the `Trainer` (its `model`, `ema`, `step`, `out`).

    `on_step(step)` is called after every step (a test's hook: raising KeyboardInterrupt there
    stops the run as Ctrl-C would, with a checkpoint).
    """
    trainer = Trainer(config)
    trainer.run(on_step)
    return trainer


class Trainer(TrainerSetup):
    """One training run: set up by `TrainerSetup.__init__`, trained by `run`.

    Only the Trainer changes its own state (`step`, `total`, the weights); `run` is the loop.
    """

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
        loss = self.loss(eps_theta.float(), batch.eps, batch.t)
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

    def loss(self, eps_theta: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The loss of one batch, always written on eps: w_t || eps - eps_theta ||^2.

        - eps prediction, uniform: w_t = 1, DDPM eq. 14 ("L_simple"), the course's loss.
        - v prediction, uniform: || v - v_theta ||^2, which is w_t = 1 / alpha_bar_t, because
          eps - eps_theta = sqrt(alpha_bar_t) (v - v_theta) (`ContextUnet.forward`).
        - min-snr, either target: Min-SNR-gamma (Hang et al. 2023, eq. 9), w_t = min(SNR_t,
          gamma) / SNR_t with SNR_t = alpha_bar_t / (1 - alpha_bar_t); the paper's v form,
          min(SNR_t, gamma) / (SNR_t + 1) on the v loss, is the same weight on eps. It stops the
          nearly clean, high-SNR steps from dominating the gradient.
        """
        c = self.config
        if c.loss_weight == "uniform" and c.prediction == "eps":
            return F.mse_loss(eps_theta, eps)
        alpha_bar_t = self.schedule.alpha_bar[t.to(self.schedule.device)].to(eps.device)
        snr = alpha_bar_t / (1 - alpha_bar_t)
        w_t = snr.clamp(max=c.snr_gamma) / snr if c.loss_weight == "min-snr" else 1 / alpha_bar_t
        return (w_t.float() * ((eps_theta - eps) ** 2).mean((1, 2, 3))).mean()

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
                            self._fit_total(calibration_start, start)
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

    def _fit_total(self, calibration_start: float, start: float) -> None:
        now = time.perf_counter()
        total = fitted_total(self.step, CALIBRATION_STEPS, now - calibration_start, now - start,
                             self.config.minutes)
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

    # %% checkpoints and previews

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
        images = self.decode(preview(model, self.schedule, n_classes=self.unet_config.n_cfeat,
                                     shape=tuple(self.dataset.images.shape[1:]),
                                     seed=self.config.seed))  # a latent run's: decoded
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
