"""The run's guards (`minidiff.training.guards`): finite checks, the cause a divergence is blamed
on, failed writes as one line. The trainer's use of them: tests/training/test_trainer.py and
tests/cli/test_train.py."""

import errno
from types import SimpleNamespace

import pytest
import torch

from minidiff.training import TrainConfig, guards
from minidiff.training.guards import all_finite, divergence_cause, writing
from minidiff.utils.errors import MinidiffError


def test_all_finite_looks_into_nested_state():
    assert all_finite({"a": [torch.ones(2)], "b": torch.arange(3), "c": None})
    assert not all_finite({"a": [torch.tensor([1.0, float("inf")])]})
    assert not all_finite({"optimizer": {"state": {0: {"exp_avg": torch.tensor([float("nan")])}}}})


def test_nan_labels_are_blamed_not_the_learning_rate():
    """Issue 13 case 2: with NaN in the labels the cause named is the data, whatever the flags."""
    data = SimpleNamespace(images=torch.zeros(4, 3, 4, 4),
                           contexts=torch.tensor([[1.0, 0], [float("nan"), 0]] * 2))
    config = TrainConfig(lr=0.5)
    assert divergence_cause(data, config) == ("because the labels hold NaN or inf values: "
                                              "fix --labels")
    data.images[0, 0, 0, 0] = float("inf")
    assert "training images hold NaN or inf" in divergence_cause(data, config)
    data.images.zero_()
    data.contexts.nan_to_num_(0.0)
    assert divergence_cause(data, config) == "likely from --lr 0.5: lower it (the default is 0.004)"
    assert "--weight-decay 1e+06" in divergence_cause(data, TrainConfig(lr=0.5, weight_decay=1e6))


def test_a_failed_write_is_one_line_naming_the_fix(tmp_path):
    with pytest.raises(MinidiffError, match=r"cannot write x in .* \(No space left on device\): "
                       r"free some space, or pass another --out; kept"):
        with writing(tmp_path, "x", "kept"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_torch_saves_runtime_error_on_a_full_disk_is_a_failed_write(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError("... unexpected pos ..."): one line too."""
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    with pytest.raises(MinidiffError, match=r"\(No space left on device\): free some space"):
        with writing(tmp_path, "checkpoint.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6 vs 5")
    with pytest.raises(RuntimeError, match="a bug"):  # anything else is not a write failure
        with writing(tmp_path, "checkpoint.pt"):
            raise RuntimeError("a bug")
