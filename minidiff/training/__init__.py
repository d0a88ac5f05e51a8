"""Training plumbing around the course's loss: the configuration (`config`), the Trainer and its
loop (`trainer`; the autoencoder's in `autoencoder`), what each step draws (`batches`), run
folders (`runs`), the bar and the --minutes budget (`progress`), guards and process groups.

    from minidiff.training import TrainConfig, train
    trainer = train(TrainConfig(steps=200, out="runs/short"))

The names below load on first use.
"""

from __future__ import annotations

from minidiff.utils.lazy import lazy_exports

_EXPORTS = {"TrainConfig": "minidiff.training.config", "with_preset": "minidiff.training.config",
            "Trainer": "minidiff.training.trainer", "train": "minidiff.training.trainer"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
