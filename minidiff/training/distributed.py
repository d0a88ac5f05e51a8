"""Data-parallel training across processes: `torchrun --nproc_per_node=N -m minidiff train ...`.

torchrun starts N copies of the trainer and tells each its place through environment variables
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). Each process (a "rank") trains
the same network on its own slice of every global batch; DistributedDataParallel averages the
gradients across ranks inside `backward`, so every rank takes the same optimizer step and the
weights stay identical. Rank 0 alone prints and writes files.

Backends: NCCL between GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minidiff.utils.errors import MinidiffError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank r of world_size processes (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Dist:
    """Read torchrun's variables; a plain `python -m minidiff train` is rank 0 of 1."""
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except (KeyError, ValueError):
        raise MinidiffError("RANK and WORLD_SIZE must be set as integers; start distributed runs "
                            "with 'torchrun --nproc_per_node=N -m minidiff train ...'") from None


def setup(env: Dist, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not env.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    return device


def teardown(env: Dist, finished: bool = False) -> None:
    """Leave the process group; a finished run waits for every rank first, since a rank that
    leaves while rank 0 still writes its checkpoint and preview aborts gloo ("terminate called
    without an active exception", one torchrun in four on 2 CPUs)."""
    if env.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(env: Dist, obj):
    """Rank 0's `obj` on every rank (an error message, a decision to stop...)."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(env: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a time budget ran out)."""
    if not env.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@torch.no_grad()
def sync_buffers(env: Dist, model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Each rank's BatchNorm sees only its own slice of the batch, so the running statistics drift
    apart between ranks even though the weights do not; rank 0's are the ones saved.
    """
    if env.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def wrap(env: Dist, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (BatchNorm synchronised across GPUs), or `model`."""
    if not env.enabled:
        return model
    if device.type == "cuda":  # SyncBatchNorm runs on GPUs only: batch statistics over all ranks
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
