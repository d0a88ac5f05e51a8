"""The feature classifier (`minidiff.evaluation.classifier`): its shift augmentation, and its
cache (trained once, read back, rebuilt when damaged)."""

import dataclasses

import pytest
import torch

from minidiff.checkpoint import save_checkpoint
from minidiff.data.datasets import Dataset
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier, shift
from minidiff.unet import UnetConfig, build_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shift_moves_each_image_whole_and_fills_white():
    x = torch.rand(64, 3, 5, 7) * 2 - 1
    moved = shift(x, 1, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    for a, b in zip(x, moved):  # b is a moved by some (dy, dx) in {-1, 0, 1}^2, white elsewhere
        padded = torch.nn.functional.pad(a, (1, 1, 1, 1), value=1.0)
        assert any(torch.equal(padded[:, 1 + dy:6 + dy, 1 + dx:8 + dx], b)
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert not torch.equal(moved, x)  # 1 in 9 stays put: 64 images do not all


def tiny_dataset(n=200):
    pixels, labels = make_sprites(n, seed=0)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Dataset(images, torch.eye(5)[torch.from_numpy(labels)], list(CLASSES), "tiny")


def test_classifier_is_trained_once_then_cached(tmp_path):
    data, config = tiny_dataset(), ClassifierConfig(n_feat=8, steps=40, batch_size=32)
    model, info = cached_classifier(data, config, cache=tmp_path)
    assert info["trained"] and 0.5 < info["accuracy"] <= 1.0  # five classes: chance is 0.2
    again, info_again = cached_classifier(data, config, cache=tmp_path)
    assert not info_again["trained"] and info_again["accuracy"] == info["accuracy"]
    assert torch.equal(again(data.images[:4]), model(data.images[:4]))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "run checkpoint", "wrong shapes"])
def test_a_corrupt_cached_classifier_is_rebuilt(tmp_path, damage):
    """Issue 13 case 8: a damaged cache file is a cache miss, trained again and replaced."""
    data, config = tiny_dataset(), ClassifierConfig(n_feat=8, steps=5, batch_size=16)
    _, info = cached_classifier(data, config, cache=tmp_path)
    path = tmp_path / info["path"].rsplit("/", 1)[-1]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 64)
    elif damage == "run checkpoint":  # a file of another kind under the cache's name
        model = build_unet(UnetConfig(n_feat=8))
        save_checkpoint(path, {"config": {"unet": dataclasses.asdict(UnetConfig(n_feat=8)),
                                          "schedule": {"kind": "linear", "T": 5, "beta1": 1e-4,
                                                       "beta2": 0.02}},
                               "classes": list(CLASSES), "model": model.state_dict()})
    else:  # the right kind, but weights for another network
        other = ClassifierConfig(n_feat=16, steps=1)
        _, elsewhere = cached_classifier(data, other, cache=tmp_path / "other")
        path.write_bytes(open(elsewhere["path"], "rb").read())
    model, again = cached_classifier(data, config, cache=tmp_path)
    assert again["trained"] and again["rebuilt"] and str(path) in again["rebuilt"]
    _, third = cached_classifier(data, config, cache=tmp_path)
    assert not third["trained"] and third["rebuilt"] is None  # the replaced file reads back
