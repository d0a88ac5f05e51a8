"""The held-out instrument (issue 11): per-class diversity, the seed summary, and
`evaluate_held_out` on samplers whose answer is known: one that hands back training images (a
perfect memoriser), one that repeats one image per class (a collapse), and a real network."""

import dataclasses

import numpy as np
import pytest
import torch

from minidiff.data.datasets import Dataset
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier
from minidiff.evaluation.held_out import evaluate_held_out, split_dataset, summarise
from minidiff.evaluation.metrics import class_diversity, mean_pairwise_distance
from minidiff.pipeline import load
from minidiff.sampling import SamplerConfig
from minidiff.training.checkpoint import save_checkpoint
from minidiff.unet import UnetConfig, build_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mean_pairwise_distance():
    # the corners of a unit square: 4 sides of 1 and 2 diagonals of sqrt(2), over 6 pairs
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    assert mean_pairwise_distance(square) == pytest.approx((4 + 2 * np.sqrt(2)) / 6)
    assert mean_pairwise_distance(square[:1]) is None


def test_class_diversity_is_the_spread_ratio_per_class():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    real_labels = torch.arange(60) % 3
    # class a: as varied as real (the same points); b: half the spread; c: one repeated point
    samples = real.copy()
    samples[real_labels.numpy() == 1] *= 0.5
    samples[real_labels.numpy() == 2] = samples[2]
    got = class_diversity(samples, real_labels, real, real_labels, ["a", "b", "c"])
    assert got["a"] == pytest.approx(1.0) and got["b"] == pytest.approx(0.5)
    assert got["c"] == 0.0
    lonely = class_diversity(samples[:4], real_labels[:4], real, real_labels, ["a", "b", "c"])
    assert lonely["c"] is None  # one sample of class c: no pair to measure


def test_summarise_gives_each_mean_and_min():
    rows = [{"fid": 3.0, "conditional_accuracy": 0.5, "diversity": {"a": 1.0, "b": None}},
            {"fid": 1.0, "conditional_accuracy": 0.7, "diversity": {"a": 0.5, "b": 0.2}}]
    got = summarise(rows)
    assert got["fid_each"] == [3.0, 1.0] and got["fid_min"] == 1.0 and got["fid_mean"] == 2.0
    assert got["conditional_accuracy_mean"] == pytest.approx(0.6)
    assert got["diversity_per_class"] == {"a": 0.75, "b": 0.2}
    assert got["diversity_mean"] == pytest.approx(0.475)
    assert got["diversity_each"] == [1.0, 0.35]


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
