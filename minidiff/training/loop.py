"""The bookkeeping around the training steps: logging, previews, checkpoints, the time budget,
and Ctrl-C. The steps themselves are `Trainer.train_step`.

Costs kept off the hot path: the loss stays a tensor and is read (one sync) only when a metrics
line is written; the progress bar redraws from that value.
"""

from __future__ import annotations

import math

import torch

from minidiff.training import distributed
from minidiff.utils.errors import MinidiffError
from minidiff.training.progress import Progress
from minidiff.training.trainer import CALIBRATION_STEPS, Trainer, deferred_interrupt, now

BUDGET_SHARE = 0.95  # fit the step count to this share of --minutes: previews and saving take time


class Window:
    """Loss and speed since the last metrics line."""

    def __init__(self, trainer: Trainer, run_start: float):
        self.run_start = run_start
        self.loss_sum = torch.zeros((), device=trainer.device)
        self.steps, self.start, self.first_step = 0, now(), trainer.step

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1


def run_loop(trainer: Trainer, on_step=None) -> None:
    tr, c, env = trainer, trainer.config, trainer.env
    bar = Progress(c.progress and env.is_main, tr.total, tr.step)
    start, first_step = now(), tr.step
    budget = c.minutes * 60 if c.minutes else None
    window, calibration_start, consistent = Window(tr, start), None, True
    tr.model.train()
    with deferred_interrupt() as interrupt, bar:
        try:
            while tr.total is None or tr.step < tr.total:
                consistent = False
                loss = tr.train_step(tr.step)
                tr.step += 1
                consistent = True
                window.add(loss)
                if tr.total is None:  # fitting the step count to --minutes
                    if tr.step == first_step + 1:
                        calibration_start = now()  # after the first step's warm-up (compile)
                    elif tr.step == first_step + 1 + CALIBRATION_STEPS:
                        _fit_total(tr, calibration_start, start, budget)
                        bar.update(tr.step, total=tr.total)
                if tr.step % c.log_every == 0 or tr.step == tr.total:
                    window = _log(tr, window, bar)
                _periodic(tr, bar)
                if on_step is not None:
                    on_step(tr.step)
                stop = interrupt["hit"]
                over = budget is not None and now() - start > budget
                if env.enabled:  # every rank must stop at the same step
                    stop = distributed.any_rank(env, stop, tr.device)
                    over = distributed.any_rank(env, over, tr.device)
                if stop:
                    raise KeyboardInterrupt
                if over:
                    bar.print(f"--minutes {c.minutes} reached at step {tr.step}")
                    break
        except KeyboardInterrupt:
            if consistent and tr.step > first_step:
                tr.save()
                bar.print(f"interrupted at step {tr.step}: checkpoint saved in {tr.out}; "
                          f"continue with --resume --out {tr.out}")
            raise
        if window.steps:
            _log(tr, window, bar)
    if tr.step > first_step:
        tr.save()
        grid = tr.write_preview()
        seconds = now() - start
        speed = (tr.step - first_step) * c.batch_size / seconds
        if env.is_main:
            bar.print(f"trained {tr.step - first_step} steps in {seconds:.0f} s "
                      f"({speed:.0f} images/s); run folder {tr.out}, samples {grid}")


def _fit_total(tr: Trainer, calibration_start: float, start: float, budget: float) -> None:
    rate = CALIBRATION_STEPS / (now() - calibration_start)  # steps per second
    remaining = budget * BUDGET_SHARE - (now() - start)
    total = tr.step + max(0, int(remaining * rate))
    tr.total = distributed.broadcast_object(tr.env, total)


def _log(tr: Trainer, window: Window, bar: Progress) -> Window:
    """Write one metrics line (rank 0) and refresh the bar; returns a fresh window."""
    loss_sum = window.loss_sum
    if tr.env.enabled:
        torch.distributed.all_reduce(loss_sum)
        loss_sum = loss_sum / tr.env.world_size
    loss = float(loss_sum) / window.steps  # the one sync of the window
    if not math.isfinite(loss):
        raise MinidiffError(f"the loss became {loss} by step {tr.step}: training diverged; "
                            f"lower --lr (now {tr.config.lr}) or keep --grad-clip on "
                            "(the last checkpoint is kept)")
    seconds = now() - window.start
    rate = window.steps / seconds
    lr = tr.optimizer.param_groups[0]["lr"]
    if tr.env.is_main:
        tr.metrics.write({"step": tr.step, "epoch": round(tr.step / tr.batches.steps_per_epoch, 4),
                          "loss": loss, "lr": lr, "images_per_s": rate * tr.config.batch_size,
                          "time_s": round(now() - window.run_start, 3)})
    bar.update(tr.step, loss=loss, rate=rate)
    return Window(tr, window.run_start)


def _periodic(tr: Trainer, bar: Progress) -> None:
    """Previews and checkpoints every N steps (the last step's are written after the loop)."""
    c = tr.config
    if tr.step == tr.total:
        return
    if c.sample_every and tr.step % c.sample_every == 0:
        grid = tr.write_preview()
        if grid is not None:
            bar.print(f"step {tr.step}: samples in {grid}")
    if c.checkpoint_every and tr.step % c.checkpoint_every == 0:
        tr.save()
