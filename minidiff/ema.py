"""An exponential moving average (EMA) of a network's weights: the copy most diffusion models
sample.

theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimizer step (Polyak averaging,
as in DDPM's training, which keeps decay 0.9999). The average is smoother than the last weights
and usually samples cleaner images.

The mistakes learners report with EMA, and how this module avoids each:

- averaging things that are not weights: only `parameters()` are averaged. Buffers are not
  averaged; they are copied from the live network (a noise schedule kept as a buffer must stay
  exactly itself, and minidiff keeps the schedule outside the network anyway).
- BatchNorm running statistics (the course's network): copied statistics belong to the live
  weights, not to the averaged ones. `recalibrate_batchnorm` re-estimates them for the EMA
  weights from a few training batches (as `torch.optim.swa_utils.update_bn` does for SWA) before
  the EMA network is saved or sampled.
- averaging in low precision: the EMA is kept in float32 even when training runs in bf16.
- a cold start: with decay 0.999 the first average is mostly the random initial weights, so the
  decay warms up as min(decay, (1 + n) / (10 + n)) over the first updates n.
- sampling or saving the wrong copy: the trainer samples its previews with the EMA network and
  saves both; `load_trained` picks the EMA weights unless asked otherwise.
- keys of a wrapped network (`module.` from DDP, `_orig_mod.` from torch.compile): the EMA copies
  the bare network, so its state_dict loads into a fresh `build_unet`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A float32 copy of `model` whose parameters follow its own by a moving average."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay={decay!r} is outside the valid range (0, 1)")
        self.decay = decay
        self.updates = 0  # how many times `update` ran: drives the warm-up
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay this update uses: warmed up over the first updates (see the module doc)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """theta_ema <- d * theta_ema + (1 - d) * theta; buffers copied as they are."""
        weight = 1.0 - self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, weight)  # ema += weight * (theta - ema)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> None:
    """Re-estimate every BatchNorm's running mean and variance for `model`'s own weights.

    `batches` yields the network's inputs as tuples, e.g. (x_t, t / T, c) drawn as in training.
    The statistics are reset and averaged equally over all batches (momentum None), then the
    network is put back in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for inputs in batches:
        model(*inputs)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
