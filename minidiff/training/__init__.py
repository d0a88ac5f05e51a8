"""Training plumbing around the course's loss: the torch-free configuration (`config`), the Trainer
and its loop (`trainer`, set up by `trainer_setup`), batches, checkpoints, run folders, progress
and process groups.

    from minidiff.training import TrainConfig, train
    trainer = train(TrainConfig(steps=200, out="runs/short"))

The names below load on first use, so `import minidiff.training.config` pulls in no torch.
"""

from __future__ import annotations

from minidiff.utils.lazy import lazy_exports

_EXPORTS = {"TrainConfig": "minidiff.training.config", "with_preset": "minidiff.training.config",
            "Trainer": "minidiff.training.trainer", "train": "minidiff.training.trainer"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
