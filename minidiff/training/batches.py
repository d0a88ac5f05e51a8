"""What each training step sees, as a pure function of (seed, step).

A step draws a batch of images x0 with their contexts c, a timestep t ~ U{1..T} per image (or,
given `t_of_z`, t = t_of_z(z) for z ~ N(0, 1): `noising.lognormal_t`), the noise eps ~ N(0, I),
which contexts are dropped to the null context, and which images are mirrored. None of it
comes from a global random state: the data order of epoch e is a permutation seeded by
(seed, e), and the draws of step s come from a generator seeded by (seed, s). Hence:

- resuming at step s draws exactly what the uninterrupted run drew at step s;
- N data-parallel processes draw the same global batch as one process would, and each keeps its
  own slice of it (like `DistributedSampler`, without its per-epoch state);
- changing anything else (a preview, a checkpoint, the number of threads) changes no draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Independent random streams, one per purpose, so that no draw shifts another.
ORDER, NOISE = range(2)


def generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator seeded by (seed, stream, index) through NumPy's SeedSequence hashing."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


@dataclass
class Batch:
    """One process's share of one step: x0 (b, C, H, W), t (b,) int64 on the CPU (checking it
    there costs the GPU no wait), eps like x0, c (b, n_classes) or None."""

    x0: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    c: torch.Tensor | None


class Batches:
    """Draws the batch of any step; `images` and `contexts` already live on the training device.

    `batch_size` is the global batch (all processes together); process `rank` of `world_size`
    keeps rows [rank * b, (rank + 1) * b) of it, b = batch_size / world_size. The last partial
    batch of an epoch is dropped, so every step has the same shape.
    """

    def __init__(self, images, contexts, *, T: int, batch_size: int, seed: int,
                 context_drop: float = 0.1, hflip: bool = False, rank: int = 0,
                 world_size: int = 1, t_of_z=None):
        self.images, self.contexts, self.t_of_z = images, contexts, t_of_z
        self.T, self.batch_size, self.seed = T, batch_size, seed
        self.context_drop, self.hflip = context_drop, hflip
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(images) // batch_size
        self._order = (None, None)  # (epoch, its permutation): one epoch is kept

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of the data used in `epoch`."""
        if self._order[0] != epoch:
            g = generator(self.seed, ORDER, epoch)
            self._order = (epoch, torch.randperm(len(self.images), generator=g))
        return self._order[1]

    def indices(self, step: int) -> torch.Tensor:
        """Rows of the global batch of `step`."""
        epoch, i = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]

    def __call__(self, step: int) -> Batch:
        B, g = self.batch_size, generator(self.seed, NOISE, step)
        shape = (B,) + tuple(self.images.shape[1:])
        # Drawn for the whole global batch, in this order, whatever the options: every process
        # and every recipe consumes the stream identically.
        t = torch.randint(1, self.T + 1, (B,), generator=g)
        eps = torch.randn(shape, generator=g)
        keep = torch.rand(B, generator=g) >= self.context_drop
        flip = torch.rand(B, generator=g) < 0.5
        if self.t_of_z is not None:  # drawn last, so the draws above stay those of U{1..T}
            t = self.t_of_z(torch.randn(B, generator=g, dtype=torch.float64))
        mine = slice(self.rank * B // self.world_size, (self.rank + 1) * B // self.world_size)
        device = self.images.device
        rows = self.indices(step)[mine].to(device)
        x0 = self.images[rows]
        if self.hflip:
            x0 = torch.where(flip[mine].to(device)[:, None, None, None], x0.flip(-1), x0)
        c = None
        if self.contexts.shape[1]:  # course: c * bernoulli(0.9), the null context otherwise
            c = self.contexts[rows] * keep[mine].to(device, self.contexts.dtype)[:, None]
        return Batch(x0, t[mine], eps[mine].to(device, non_blocking=True), c)
