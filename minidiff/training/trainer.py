"""The trainer: DDPM Algorithm 1, one step after another, and the loop every minidiff trainer runs.

Read it top to bottom, as nanoGPT's train.py: `Trainer.__init__` sets the run up (the data, the
network and optimizer, a resumed checkpoint, then the run folder: in that order, so that bad input
costs nothing), `train_step` is one step, and `run` is the loop: step, fit the length to
--minutes, log, preview, checkpoint, stop. `minidiff.training.autoencoder.AutoencoderTrainer`
runs the same loop with its own setup and step.

Each step, DDPM Algorithm 1 as the course runs it:
  1. x0 ~ data, with its context c (one-hot class), zeroed for 10% of the batch: the "null"
     context that classifier-free guidance samples with
  2. t ~ Uniform{1, ..., T}, or with `--t-sampling lognormal` EDM's log sigma_t ~ N(-1.2, 1.2^2)
  3. eps ~ N(0, I)                  (1-3: `minidiff.training.batches`, a function of (seed, step))
  4. x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   (DDPM eq. 4, `noising.q_sample`;
     not the course's form, which drops the square root on the noise coefficient)
  5. a gradient step on || eps - eps_theta(x_t, t / T, c) ||^2, where a v network's output
     becomes eps_theta by `noising.eps_from_v`
Around it (`TrainConfig` lists every knob): AdamW, warm-up then cosine, gradient clipping, an EMA
of the weights, bf16 autocast where the hardware has it, data-parallel under torchrun. Costs kept
off the hot path: the loss is read (one sync) only when a metrics line is written, the weights are
checked finite only when a checkpoint is written. Rank 0 alone prints and writes.

Tutorial: tutorials/04_training.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidiff.autoencoder import encode_dataset
from minidiff.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.ema import EMA, has_batchnorm, recalibrate_batchnorm
from minidiff.noising import eps_from_v, lognormal_t, make_schedule, q_sample
from minidiff.samplers import SAMPLER, SamplerConfig, sample_loop
from minidiff.training import distributed, runs
from minidiff.training.batches import Batches
from minidiff.training.config import SESSION_FIELDS, TrainConfig, check_train_config, learning_rate
from minidiff.training.guards import all_finite, deferred_interrupt, divergence_cause, writing
from minidiff.training.progress import Budget, Progress
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.device import fast_bf16, resolve_device
from minidiff.utils.errors import MinidiffError
from minidiff.utils.threads import CORES, training_threads


def train(config: TrainConfig, on_step=None) -> Trainer:
    """Train as `config` says; returns the `Trainer` (its `model`, `ema`, `step`, `out`).
    `on_step(step)` runs after every step (a test's hook: raising KeyboardInterrupt there stops
    the run as Ctrl-C would, with a checkpoint)."""
    trainer = Trainer(config)
    trainer.run(on_step)
    return trainer


class Trainer:
    """One training run: set up by `__init__`, trained by `run`. Fresh, `step` is 0; resumed, it
    is the checkpoint's and so are the weights. `finished`: a resumed run with no steps left."""

    clock = staticmethod(time.perf_counter)  # the loop's clock (a test may fake it)
    kind = runs.RUN_KIND  # the checkpoint's kind, and the config's key for the recipe

    def __init__(self, config):
        self.config, self.env = config, distributed.from_environment()
        self.threads_before = torch.get_num_threads()  # given back when the run ends
        self.step, self.total, self.saved_step = 0, None, None
        self.finished, self.lock, self.metrics, self.ema = False, None, None, None
        try:
            if config.threads is None and "OMP_NUM_THREADS" not in os.environ:
                self.config = config = dataclasses.replace(config, threads=training_threads())
                if config.threads < CORES:
                    self.say(f"another process is running on {CORES - config.threads} of the "
                             f"{CORES} cores: training on {config.threads} thread(s), which hold "
                             f"their speed beside it (--threads {CORES} takes every core)")
            if config.threads:
                torch.set_num_threads(config.threads)
            self.setup(config)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def t_of_z(c: TrainConfig):
        """Algorithm 1, line 3's t for `Batches`: None for t ~ U{1..T}, else z -> `lognormal_t`
        on this run's schedule (on the CPU, where the batches are drawn)."""
        if c.t_sampling == "uniform":
            return None
        schedule = make_schedule(c.schedule, c.timesteps, c.beta1, c.beta2)
        return functools.partial(lognormal_t, schedule=schedule, p_mean=c.p_mean, p_std=c.p_std)

    def setup(self, c: TrainConfig) -> None:
        check_train_config(c)
        self.device = distributed.setup(self.env, resolve_device(c.device))
        self.out = Path(distributed.broadcast_object(self.env, str(c.out or runs.default_out())))
        # the data: seed 0, not c.seed, so the built-in sprites and any subset stay the same
        self.dataset = load_dataset(c.data, c.labels, c.classes, c.image_size, c.n_images, seed=0)
        runs.check_batch_size(c.batch_size, len(self.dataset), self.env.world_size)
        self.data_hash = dataset_hash(self.dataset)  # of the pixels, a latent run's too
        self.latents = None  # latent diffusion: the images become their latents, encoded once
        if c.autoencoder:
            self.dataset, self.latents = encode_dataset(self.dataset, c.autoencoder, self.device)
        images = self.dataset.images
        self.unet_config = UnetConfig(arch=c.arch, in_channels=images.shape[1], n_feat=c.n_feat,
                                      n_cfeat=self.dataset.contexts.shape[1],
                                      height=images.shape[-1], patch=c.patch, dropout=c.dropout,
                                      pixel_feat=c.pixel_feat, prediction=c.prediction)
        self.batches = Batches(images.to(self.device), self.dataset.contexts.to(self.device),
                               T=c.timesteps, batch_size=c.batch_size, seed=c.seed,
                               context_drop=c.context_drop, hflip=c.hflip, rank=self.env.rank,
                               world_size=self.env.world_size, t_of_z=self.t_of_z(c))
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total = c.steps if c.epochs is None else max(1, round(c.epochs *
                                                                   self.steps_per_epoch))
        saved = self.check_resume() if c.resume else None  # before anything is built
        # the network, its optimizer and its EMA
        self.schedule = make_schedule(c.schedule, c.timesteps, c.beta1, c.beta2, self.device)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = build_unet(self.unet_config).to(self.device)
        self.channels_last = self.device.type == "cuda" if c.channels_last is None \
            else c.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast = c.precision == "bf16" or (c.precision == "auto" and fast_bf16(self.device))
        self.ema = EMA(self.model, c.ema_decay) if c.ema_decay > 0 else None
        self.net = distributed.wrap(self.env, self.model, self.device)
        if c.compile:
            self.net = torch.compile(self.net)
        params, fused = list(self.model.parameters()), self.device.type in ("cpu", "cuda")
        if c.optimizer == "adam":  # the course: torch.optim.Adam, no weight decay
            self.optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        else:  # fused: one kernel for all parameters, on CPU too
            self.optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay,
                                               fused=fused)
        if saved is not None:
            self.restore(saved)
        if not self.finished:  # a finished run writes nothing: `run` says so and stops
            self.claim_folder(resumed=saved is not None)

    def check_resume(self) -> dict:
        """The checkpoint to continue, checked against this run before anything is built."""
        path = runs.resume_checkpoint(self.out)
        saved = load_checkpoint(path, map_location=self.device)
        runs.check_same_network(path, saved["config"].get("unet"),
                                dataclasses.asdict(self.unet_config))
        runs.check_same_data(path, saved.get("data_hash"), self.data_hash)
        if self.latents is not None and (saved["config"].get("autoencoder") or {}).get(
                "sha256") != self.latents.record["sha256"]:
            raise MinidiffError(f"{path} was trained on the latents of another autoencoder (or "
                                f"{self.config.autoencoder} was retrained since); resume with the "
                                "one it trained on, or train into a new --out")
        self.check_recipe(path, saved)
        return saved

    def check_recipe(self, path: Path, saved: dict) -> None:
        """The recipe fields equal the saved ones, the run has steps left, the threads noted."""
        recipe = saved["config"].get(self.kind, {})
        runs.check_same_recipe(path, recipe, self.config, SESSION_FIELDS)
        self.finished = runs.check_length(self.out, int(saved["step"]), self.total,
                                          recipe.get("steps"), self.config)
        if self.config.threads != recipe.get("threads"):
            self.say(f"note: --threads {self.config.threads or 'default'} differs from the "
                     f"{recipe.get('threads') or 'default'} this run trained with: allowed, but "
                     "float sums round differently, so the weights will not be bit-for-bit an "
                     "uninterrupted run's")

    def restore(self, saved: dict) -> None:
        """A resumed run's weights, optimizer, EMA and step."""
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
        if self.total is None:  # fitted to --minutes before: the length it was fitted to
            self.total = saved["config"][self.kind].get("steps")

    # One step: DDPM Algorithm 1

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on the batch of `step`; returns the loss as a tensor (no sync)."""
        batch = self.batches(step)  # Algorithm 1, lines 2-4: x0, c, t, eps
        x_t = q_sample(batch.x0, batch.t, batch.eps, self.schedule)  # DDPM eq. 4
        t_normalised = batch.t.to(self.device, non_blocking=True).float() / self.config.timesteps
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            prediction = self.net(x_t, t_normalised, batch.c)  # eps_theta, or v_theta
        loss = self.loss(prediction.float(), x_t, batch.eps, batch.t)  # Algorithm 1, line 5
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, step, self.total, self.steps_per_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    def loss(self, prediction, x_t, eps, t) -> torch.Tensor:
        """w_t || eps - eps_theta ||^2, written on eps whatever the network predicts:

        - eps, uniform: w_t = 1, DDPM eq. 14 ("L_simple"), the course's loss;
        - v, uniform: eps_theta = eps_from_v(x_t, v_theta) and w_t = 1 / alpha_bar_t, which is
          || v - v_theta ||^2, since eps - eps_theta = sqrt(alpha_bar_t) (v - v_theta);
        - min-snr, either: w_t = min(SNR_t, gamma) / SNR_t, SNR_t = alpha_bar_t / (1 - alpha_bar_t)
          (Hang et al. 2023, eq. 9; their v form is the same weight on eps): the nearly clean,
          high-SNR steps no longer dominate the gradient.
        """
        c = self.config
        if c.loss_weight == "uniform" and c.prediction == "eps":
            return F.mse_loss(prediction, eps)
        alpha_bar_t = self.schedule.alpha_bar[t.to(self.schedule.device)].to(eps.device)  # (B,)
        eps_theta = prediction if c.prediction == "eps" else eps_from_v(
            x_t, prediction, alpha_bar_t.reshape(-1, 1, 1, 1))
        snr = alpha_bar_t / (1 - alpha_bar_t)
        w_t = snr.clamp(max=c.snr_gamma) / snr if c.loss_weight == "min-snr" else 1 / alpha_bar_t
        return (w_t.float() * ((eps_theta - eps) ** 2).mean((1, 2, 3))).mean()

    # The loop, every trainer's

    def run(self, on_step=None) -> None:
        """Train from `step` to `total` (fitted to --minutes as it goes when the run has no fixed
        length), then save, preview and report. Ctrl-C or SIGTERM: finish the step, save, raise
        KeyboardInterrupt."""
        try:
            if self.finished:
                self.say(f"{self.out} is finished: it trained all {self.step:,} steps; to train "
                         f"it longer, resume with more steps, e.g. --resume --out {self.out} "
                         f"--steps {2 * self.step}")
                return
            if self.saved_step is not None:
                self.say(f"resuming {self.out} from step {self.step:,}")
            self.loop(on_step)
            self.close(finished=True)
        finally:
            self.close()

    def loop(self, on_step) -> None:
        c, env, first_step = self.config, self.env, self.step
        budget = Budget(c.minutes, self.clock)
        fitting = c.minutes is not None and self.total is None
        bar = Progress(c.progress and env.is_main, self.total, self.step, self.clock)
        window, consistent = _Window(self.device, self.clock()), True
        self.model.train()
        with deferred_interrupt() as interrupt, bar:
            try:
                while self.total is None or self.step < self.total:
                    consistent = False  # an exception inside a step leaves half of it: not saved
                    window.add(self.train_step(self.step))
                    self.step += 1
                    consistent = True
                    budget.tick(self.step)
                    logs = self.step % c.log_every == 0 or self.step == self.total
                    if fitting and budget.ready() and (self.total is None or logs
                                                       or self.step >= self.total):
                        self.total = distributed.broadcast_object(
                            env, budget.fitted_total(self.step))
                        bar.update(self.step, total=self.total)
                    if logs:
                        self.log(window, bar, first_step, budget)
                        window = _Window(self.device, self.clock())
                    if self.step != self.total:  # the last step's come after the loop
                        self.periodic(bar, budget)
                    if on_step is not None:
                        on_step(self.step)
                    # stop on Ctrl-C or at the end of the budget, every rank at the same step
                    stop = distributed.any_rank(env, interrupt["hit"], self.device)
                    if stop:
                        raise KeyboardInterrupt
                    if distributed.any_rank(env, budget.over(), self.device):
                        bar.print(f"--minutes {c.minutes:g} reached at step {self.step:,}")
                        break
            except KeyboardInterrupt:
                if consistent and self.step > first_step:
                    self.save()
                    bar.print(f"interrupted at step {self.step}: checkpoint saved in {self.out}; "
                              f"continue with --resume --out {self.out}")
                raise
            if window.steps:
                self.log(window, bar, first_step, budget)
        if self.step > first_step:  # the end: the last checkpoint and preview, what was done
            if fitting:
                self.total = self.step  # the length --minutes came to
            self.save()
            shown = self.write_preview()
            seconds = budget.elapsed()
            speed = (self.step - first_step) * c.batch_size / seconds
            self.say(f"trained {self.step - first_step} steps in {seconds:.0f} s ({speed:.0f} "
                     f"images/s); run folder {self.out}{self.summary(shown)}")

    def log(self, window: _Window, bar: Progress, first_step: int, budget: Budget) -> None:
        """Write one metrics line (rank 0) and refresh the bar with the session's average rate."""
        loss_sum = window.loss_sum
        if self.env.enabled:
            torch.distributed.all_reduce(loss_sum)
            loss_sum = loss_sum / self.env.world_size
        loss = float(loss_sum) / window.steps  # the one sync of the window
        if not math.isfinite(loss):
            raise self.diverged(f"the loss became {loss} by step {self.step}")
        now = self.clock()
        if self.env.is_main:
            with writing(self.out, "metrics.jsonl", self.kept()):
                epoch = {} if self.steps_per_epoch is None else {
                    "epoch": round(self.step / self.steps_per_epoch, 4)}
                self.metrics.write({
                    "step": self.step, **epoch, "loss": loss,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": window.steps * self.config.batch_size / (now - window.start),
                    "time_s": round(budget.elapsed(), 3)})
        bar.update(self.step, loss=loss, rate=(self.step - first_step) / budget.elapsed())

    def periodic(self, bar: Progress, budget: Budget) -> None:
        """Previews and checkpoints every N steps; the budget keeps the time they take in
        reserve for the ones at the end."""
        c, began = self.config, self.clock()
        every = getattr(c, "sample_every", 0)
        if every and self.step % every == 0:
            shown = self.write_preview()
            if shown is not None:
                bar.print(f"step {self.step}: samples in {shown}")
        if c.checkpoint_every and self.step % c.checkpoint_every == 0:
            self.save()
        if self.clock() > began:
            budget.spent(self.clock() - began)

    # Checkpoints and previews

    def diverged(self, what: str) -> MinidiffError:
        """The error that stops a diverged run, naming its likely cause."""
        cause = divergence_cause(self.dataset, self.config)
        return MinidiffError(f"{what}: training diverged, {cause}; {self.kept()}")

    def kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint (step {self.saved_step}, finite) is kept"

    def sampling_model(self) -> torch.nn.Module:
        """The network previews and users sample: the EMA weights if kept, in eval mode. With
        BatchNorm (the course's network) the EMA's running statistics are re-estimated for its
        own weights on the last 8 training batches (`minidiff.ema`)."""
        if self.ema is None:
            return self.model.eval()
        if has_batchnorm(self.ema.model):
            inputs = []
            for step in range(max(0, self.step - 8), max(self.step, 1)):
                batch = self.batches(step)
                x_t = q_sample(batch.x0, batch.t, batch.eps, self.schedule).float()
                inputs.append((x_t, batch.t.to(self.device).float() / self.config.timesteps,
                               batch.c))
            recalibrate_batchnorm(self.ema.model, inputs)
        return self.ema.model

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
            raise self.diverged(f"the weights are not finite at step {self.step}")
        with writing(self.out, CHECKPOINT_NAME, self.kept()):
            save_checkpoint(self.out / CHECKPOINT_NAME, {
                **state, "config": self.run_config(), "classes": list(self.dataset.classes),
                "ema_updates": 0 if ema is None else self.ema.updates, "step": self.step,
                "data_hash": self.data_hash})
        self.saved_step = self.step

    def write_preview(self, per_class: int = 8) -> Path | None:
        """A preview grid (rank 0): the default sampler (`samplers.SAMPLER`) at 25 steps,
        `per_class` images of every class (image i of class i mod k, one column each; 32
        unconditional), from the same seeded
        noise at every preview so the grids show training, not new draws."""
        if not self.env.is_main:
            return None
        model, k = self.sampling_model(), self.unet_config.n_cfeat
        c = torch.eye(k, device=self.device).repeat(per_class, 1) if k else None
        shape = ((k or 4) * per_class, *self.dataset.images.shape[1:])
        config = SamplerConfig(sampler=SAMPLER, steps=min(25, self.schedule.T))
        x, _, _ = sample_loop(model, self.schedule, shape, c, config, seed=self.config.seed)
        images = x if self.latents is None else self.latents.decode(x)  # a latent run: decoded
        self.model.train()
        with writing(self.out, "the preview", self.kept()):
            return runs.save_preview(self.out, self.step, images, n_classes=k)

    def summary(self, shown: Path | None) -> str:
        return f", samples {shown}"

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

    # The run folder, and leaving

    def claim_folder(self, resumed: bool) -> None:
        """Lock the run folder (rank 0), clean it, write config.json and open metrics.jsonl; a
        refusal on rank 0 is raised on every rank."""
        error = None
        if self.env.is_main:
            try:
                with writing(self.out, "the run folder"):
                    self.lock = runs.claim_out(self.out, self.config.resume, say=self.say)
                    try:
                        runs.write_config(self.out, self.run_config())
                        resume_step = self.step if resumed else None
                        self.metrics = runs.MetricsLog(self.out, resume_step, say=self.say)
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

    def close(self, finished: bool = False) -> None:
        """Release the run folder, leave the process group (together, when `finished`), give
        torch back its thread count; closing twice does nothing more."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        distributed.teardown(self.env, finished)
        torch.set_num_threads(self.threads_before)


class _Window:
    """The loss summed on the device since the last metrics line, and since when."""

    def __init__(self, device: torch.device, start: float):
        self.loss_sum = torch.zeros((), device=device)
        self.steps, self.start = 0, start

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1
