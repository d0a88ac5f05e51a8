"""The training loop behind `minidiff.training.config.train`: setup, one step, and the run around it.

Order of work, chosen so that bad input costs nothing: check the configuration, load the data,
check the batch against it and a resumed checkpoint against the configuration, and only then
create the run folder and write into it. Rank 0 alone prints and writes (`minidiff.training.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidiff.training import distributed
from minidiff.training.batches import Batches
from minidiff.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from minidiff.data.datasets import dataset_hash, load_dataset
from minidiff.utils.device import resolve_device
from minidiff.ema import EMA, has_batchnorm, recalibrate_batchnorm
from minidiff.utils.errors import MinidiffError
from minidiff.noising import q_sample
from minidiff.training.runs import MetricsLog, check_out, default_out, preview, save_preview, write_config
from minidiff.schedules import make_schedule
from minidiff.training.config import SESSION_FIELDS, TrainConfig, check_config, learning_rate
from minidiff.unet import UnetConfig, build_unet

CALIBRATION_STEPS = 10  # steps timed to fit the step count to --minutes


class Trainer:
    def __init__(self, config: TrainConfig):
        check_config(config)
        self.config, self.env = config, distributed.from_environment()
        self.threads_before = torch.get_num_threads()  # restored when the run ends
        try:
            self._setup(config)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the process group and give torch back its thread count."""
        distributed.teardown(self.env)
        torch.set_num_threads(self.threads_before)

    def _setup(self, config: TrainConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = distributed.setup(self.env, resolve_device(config.device))
        self.out = Path(distributed.broadcast_object(self.env, str(config.out or default_out())))
        self._load_data()
        saved = self._check_resume() if config.resume else None
        error = None
        if self.env.is_main:
            try:
                check_out(self.out, config.resume)
            except MinidiffError as e:
                error = str(e)
        if error := distributed.broadcast_object(self.env, error):
            raise MinidiffError(error)
        self._build()
        self.step = 0
        if saved is not None:
            self._restore(saved)
        if self.env.is_main:
            write_config(self.out, self.run_config())
        self.metrics = MetricsLog(self.out, self.step if saved else None) if self.env.is_main else None

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
        path = self.out / CHECKPOINT_NAME
        if not path.is_file():
            raise MinidiffError(f"--resume: there is no {CHECKPOINT_NAME} in {self.out} to "
                                "continue from; check --out, or drop --resume to start a new run")
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
        return saved

    def _build(self) -> None:
        c, device = self.config, self.device
        cuda = device.type == "cuda"
        self.schedule = make_schedule(c.schedule, c.timesteps, c.beta1, c.beta2, device)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = build_unet(self.unet_config).to(device)
        self.channels_last = cuda if c.channels_last is None else c.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast = c.precision == "bf16" or (c.precision == "auto" and _fast_bf16(device))
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
        self.step = int(saved["step"])
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
        from minidiff.training.loop import run_loop  # the loop's bookkeeping: logging, previews, budget, Ctrl-C

        try:
            run_loop(self, on_step)
        finally:
            self.close()

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
        save_checkpoint(self.out / CHECKPOINT_NAME, {
            "config": self.run_config(), "classes": list(self.dataset.classes),
            "model": self.model.state_dict(), "ema": None if ema is None else ema.state_dict(),
            "ema_updates": 0 if ema is None else self.ema.updates,
            "optimizer": self.optimizer.state_dict(), "step": self.step,
            "data_hash": self.data_hash})

    def write_preview(self) -> Path | None:
        if not self.env.is_main:
            return None
        model = self.sampling_model()
        images = preview(model, self.schedule, n_classes=self.unet_config.n_cfeat,
                         shape=tuple(self.dataset.images.shape[1:]), seed=self.config.seed)
        self.model.train()
        return save_preview(self.out, self.step, images)


def _fast_bf16(device: torch.device) -> bool:
    """Does `device` run bf16 matrix maths natively? CUDA GPUs that support it, and CPUs with
    AVX512-BF16 or AMX (oneDNN then runs convolutions in bf16 about 1.7x faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C (SIGINT) and SIGTERM (torchrun stopping its workers) set a flag that the loop
    checks between steps, so the checkpoint it then writes is never half a step; a second signal
    stops at once."""
    state = {"hit": False}

    def handler(signum, frame):
        if state["hit"]:
            raise KeyboardInterrupt
        state["hit"] = True

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signals alone
            pass
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def now() -> float:
    return time.perf_counter()
