"""The held-out instrument (issue 11): `evaluate_held_out` on samplers whose answer is known:
one that hands back training images (a perfect memoriser), one that repeats one image per class
(a collapse), and a real network."""

import dataclasses

import pytest
import torch

from minidiff.checkpoint import save_checkpoint
from minidiff.data.datasets import Dataset
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier
from minidiff.evaluation.held_out import evaluate_held_out, split_dataset
from minidiff.pipeline import load
from minidiff.samplers import SamplerConfig
from minidiff.unet import UnetConfig, build_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sprites(n=300):
    pixels, labels = make_sprites(n, seed=0)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Dataset(images, torch.eye(5)[torch.from_numpy(labels)], list(CLASSES), "tiny")


class TrainingImagePipe:
    """A 'sampler' that returns a training image of each class asked for: random ones (a perfect
    memoriser), or the class's first every time (`collapse`)."""

    def __init__(self, train: Dataset, collapse: bool = False):
        self.train, self.collapse, self.classes = train, collapse, train.classes
        self.n_cfeat = train.contexts.shape[1]

    def sample(self, n, sampler, steps, eta, mix=None, seed=0, **_):
        labels, g = self.train.contexts.argmax(1), torch.Generator().manual_seed(seed)
        pools = [torch.nonzero(labels == k)[:, 0] for k in range(self.n_cfeat)]
        picks = [pools[k][0 if self.collapse else torch.randint(len(pools[k]), (), generator=g)]
                 for k in mix.argmax(1).tolist()]
        return self.train.images[torch.stack(picks)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    dataset = sprites()
    config = ClassifierConfig(n_feat=8, steps=60, batch_size=32)
    classifier, info = cached_classifier(dataset, config, cache=tmp_path_factory.mktemp("cache"))
    return (*split_dataset(dataset, 0.3), classifier, info)


def test_split_dataset_is_disjoint_and_seeded():
    tags = torch.arange(50.0)  # image i is filled with the number i
    dataset = Dataset(tags[:, None, None, None].expand(50, 3, 4, 4), torch.eye(5)[tags.long() % 5],
                      list(CLASSES), "tags")
    train, held = split_dataset(dataset, 0.3)
    assert (len(train), len(held)) == (35, 15)
    seen = torch.cat([train.images, held.images])[:, 0, 0, 0]
    assert sorted(seen.tolist()) == tags.tolist()  # every image once
    assert torch.equal(train.contexts.argmax(1), train.images[:, 0, 0, 0].long() % 5)
    assert torch.equal(split_dataset(dataset, 0.3)[1].images, held.images)


def test_a_memoriser_is_seen_as_one(data):
    train, held, classifier, info = data
    r = evaluate_held_out(TrainingImagePipe(train), train, held, SamplerConfig(), n=60,
                          classifier=classifier, classifier_info=info)
    assert r["n_samples"] == 60 and r["n_held_out"] == 90 and r["seeds"] == [0, 1, 2]
    assert r["memorisation_mean"] == 1.0 and r["nearest_rms_median_mean"] == 0.0
    assert r["memorisation_real"] < 0.5 and r["nearest_rms_median_real"] > 0.1
    # training images are draws from the data: the samples score like the floor
    assert r["fid_mean"] < 3 * r["fid_floor_mean"] + 0.5
    assert 0.6 < r["diversity_mean"] < 1.5 and len(r["fid_each"]) == 3
    assert r["fid_min"] == min(r["fid_each"])
    # texture: training images are as crisp as held-out ones, so both sit on the floor
    assert r["swd_mean"] < 1.5 * r["swd_floor_mean"] + 5 and 0.8 < r["hf_ratio_mean"] < 1.2
    assert r["swd_class_mean"] > 0 and len(r["swd_each"]) == 3


def test_a_collapse_is_seen_in_diversity_not_accuracy(data):
    train, held, classifier, info = data
    r = evaluate_held_out(TrainingImagePipe(train, collapse=True), train, held,
                          SamplerConfig(), n=60, seeds=(0,), classifier=classifier,
                          classifier_info=info)
    assert r["diversity_mean"] == 0.0 and set(r["diversity_per_class"]) == set(CLASSES)
    assert 0.6 < r["diversity_floor_mean"] < 1.5  # real training images: as varied as held out
    assert r["fid_each"] == [r["fid_min"]]


def test_evaluate_held_out_samples_a_real_network(data, tmp_path):
    train, held, classifier, info = data
    config = UnetConfig(n_feat=8)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {
        "config": {"unet": dataclasses.asdict(config),
                   "schedule": {"kind": "linear", "T": 500, "beta1": 1e-4, "beta2": 0.02}},
        "classes": list(CLASSES), "model": build_unet(config).state_dict(), "ema": None})
    pipe = load(tmp_path / "run", device="cpu")
    r = evaluate_held_out(pipe, train, held, SamplerConfig(steps=2, guidance=2.0), n=1000,
                          seeds=(0, 1), classifier=classifier, classifier_info=info)
    assert r["n_samples"] == len(train)  # n is capped at the training images there are
    assert r["fid_mean"] > r["fid_floor_mean"]  # an untrained network is far from the data
    assert r["memorisation_mean"] == 0.0 and r["classifier_accuracy"] == info["accuracy"]
    assert r["swd_mean"] > 2 * r["swd_floor_mean"]  # and its noise is not the data's texture
    assert r["swd_class_mean"] > r["swd_class_floor_mean"]
    assert abs(r["hf_ratio_mean"] - 1) > abs(r["hf_ratio_floor_mean"] - 1)
