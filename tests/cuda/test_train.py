"""Training on the GPU: the default recipe's bf16 autocast and channels_last, --compile, and a
resume that ends with bit-identical weights, as tests/test_train.py checks on the CPU."""

import json
from pathlib import Path

import pytest
import torch

from minidiff.checkpoint import load_checkpoint
from minidiff.cli import main
from minidiff.training.config import TrainConfig
from minidiff.training.trainer import train

pytestmark = pytest.mark.cuda


def tiny(out, **overrides) -> TrainConfig:
    """The default recipe on the GPU, small: a few seconds."""
    base = {"n_images": 64, "n_feat": 8, "batch_size": 16, "steps": 8, "warmup_steps": 2,
            "sample_every": 0, "checkpoint_every": 4, "log_every": 2, "progress": False,
            "device": "cuda", "out": str(out)}
    return TrainConfig(**{**base, **overrides})


def losses(out) -> list[float]:
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def state(out) -> dict:
    return load_checkpoint(Path(out) / "checkpoint.pt")


def assert_same_weights(a: dict, b: dict, what: str) -> None:
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {len(different)} of {len(a)} tensors differ: {different[:3]}"


def test_bf16_channels_last_training_learns(tmp_path):
    trainer = train(tiny(tmp_path / "run", n_images=512, n_feat=16, batch_size=64, steps=40,
                         warmup_steps=5, log_every=10, precision="bf16", channels_last=True))
    assert trainer.autocast and trainer.channels_last
    convs = [p for p in trainer.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    logged = losses(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(logged))), logged
    assert logged[-1] < logged[0], f"the loss did not fall: {logged}"


def test_compile_trains_the_same_losses_as_eager(tmp_path):
    """`train --compile` through the CLI; the same run eager. bf16 rounding differs between the
    compiled and eager kernels, so the losses agree to 5%, not bit for bit."""
    flags = ["train", "--device", "cuda", "--n-images", "256", "--n-feat", "16", "--batch-size",
             "32", "--steps", "10", "--log-every", "5", "--sample-every", "0", "--no-progress"]
    assert main([*flags, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    assert main([*flags, "--out", str(tmp_path / "eager")]) == 0
    compiled, eager = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert len(compiled) == len(eager) == 2
    for a, b in zip(compiled, eager):
        assert abs(a - b) <= 0.05 * b, f"compiled {compiled} vs eager {eager}"


def test_two_runs_on_the_gpu_are_bit_identical(tmp_path):
    """Without this, no resume can be exact: the same seed must give the same weights. (The
    trainer sets no cuDNN determinism; if this fails, suspect the convolutions' backward
    algorithms, which may add in any order: torch.backends.cudnn.deterministic = True.)"""
    train(tiny(tmp_path / "a"))
    train(tiny(tmp_path / "b"))
    assert_same_weights(state(tmp_path / "a")["model"], state(tmp_path / "b")["model"], "model")


def test_resume_on_the_gpu_is_bit_exact(tmp_path):
    """A crash after step 6 loses steps 5-6; resuming from the step-4 checkpoint on the GPU
    redoes them and ends with the uninterrupted run's weights, EMA and optimizer, bit for bit."""

    def crash(step):
        if step == 6:
            raise RuntimeError("simulated crash")

    train(tiny(tmp_path / "straight"))
    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny(tmp_path / "resumed"), on_step=crash)
    assert state(tmp_path / "resumed")["step"] == 4
    train(tiny(tmp_path / "resumed", resume=True))
    straight, resumed = state(tmp_path / "straight"), state(tmp_path / "resumed")
    assert resumed["step"] == 8
    for key in ("model", "ema"):
        assert_same_weights(resumed[key], straight[key], key)
    optimizer = {f"{i}.{k}": v for i, s in resumed["optimizer"]["state"].items()
                 for k, v in s.items()}
    expected = {f"{i}.{k}": v for i, s in straight["optimizer"]["state"].items()
                for k, v in s.items()}
    assert_same_weights(optimizer, expected, "optimizer")
