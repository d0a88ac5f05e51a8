"""FID, memorisation, accuracy and the eval command: exact small cases, then plumbing."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from minidiff.training.checkpoint import save_checkpoint
from minidiff.cli import main
from minidiff.data.datasets import Dataset
from minidiff.evaluation.metrics import (
    NEAR_COPY_RMS,
    ClassifierConfig,
    cached_classifier,
    conditional_accuracy,
    fid,
    frechet_distance,
    memorisation,
    nearest_rms,
    shift,
)
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.unet import UnetConfig, build_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frechet_distance_of_1d_gaussians():
    # (mu1 - mu2)^2 + (sigma1 - sigma2)^2 in one dimension: (1 - 3)^2 + (2 - 1)^2
    assert frechet_distance(1.0, 4.0, 3.0, 1.0) == pytest.approx(5.0, abs=1e-12)


def test_frechet_distance_of_2d_gaussians():
    """S1 = I, S2 = [[2, 1], [1, 2]] (eigenvalues 3, 1): tr(S2^1/2) = sqrt(3) + 1, so the
    distance is 2 + 4 - 2 (sqrt(3) + 1) = 4 - 2 sqrt(3), plus ||mu1 - mu2||^2 = 1 + 4."""
    got = frechet_distance([0, 0], np.eye(2), [1, 2], [[2, 1], [1, 2]])
    assert got == pytest.approx(5 + 4 - 2 * math.sqrt(3), abs=1e-12)


def test_frechet_distance_matches_an_independent_matrix_square_root():
    """Against (S1 S2)^1/2 computed by the Denman-Beavers iteration on the non-symmetric product,
    a different route from the module's eigendecomposition of S1^1/2 S2 S1^1/2."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 7)), rng.normal(size=(7, 7))
    s1, s2 = a @ a.T + np.eye(7), b @ b.T + np.eye(7)
    y, z = s1 @ s2, np.eye(7)
    for _ in range(60):  # Y -> (S1 S2)^1/2, Z -> (S1 S2)^-1/2
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    np.testing.assert_allclose(y @ y, s1 @ s2, rtol=1e-9)
    expected = np.trace(s1 + s2 - 2 * y)
    assert frechet_distance(np.zeros(7), s1, np.zeros(7), s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_identical_and_shifted_sets():
    feats = np.random.default_rng(1).normal(size=(500, 16))
    assert fid(feats, feats) == pytest.approx(0.0, abs=1e-7)
    shift = np.full(16, 0.5)
    # the same covariance: only the means differ, by ||shift||^2 = 16 * 0.25
    assert fid(feats, feats + shift) == pytest.approx(4.0, rel=1e-7)
    assert fid(feats, 2 * feats) > 1.0


def test_memorisation_catches_exact_and_near_copies():
    training = torch.rand(50, 3, 16, 16) * 2 - 1
    fresh = torch.rand(5, 3, 16, 16) * 2 - 1
    near = training[5:10] + NEAR_COPY_RMS / 2 * torch.randn(5, 3, 16, 16).sign()  # RMS = thr / 2
    far = training[10:15] + 2 * NEAR_COPY_RMS * torch.randn(5, 3, 16, 16).sign()
    samples = torch.cat([training[:5], near, far, fresh])
    assert nearest_rms(training[:5], training).max() < 1e-3
    assert memorisation(samples, training) == pytest.approx(10 / 20)


def test_conditional_accuracy():
    class Oracle(torch.nn.Module):  # "classifies" an image by its first five pixel values
        def forward(self, x):
            return x.reshape(len(x), -1)[:, :5]

    contexts = torch.eye(5)[torch.tensor([0, 1, 2, 3, 4, 0])]
    images = torch.zeros(6, 3, 16, 16)
    images.reshape(6, -1)[:, :5] = contexts
    assert conditional_accuracy(Oracle(), images, contexts) == 1.0
    assert conditional_accuracy(Oracle(), images, contexts.roll(1, dims=1)) == 0.0


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


# --- the eval command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    config = UnetConfig(n_feat=8)
    torch.manual_seed(0)
    model = build_unet(config)
    save_checkpoint(root / "run" / "checkpoint.pt", {
        "config": {"unet": dataclasses.asdict(config),
                   "schedule": {"kind": "linear", "T": 500, "beta1": 1e-4, "beta2": 0.02}},
        "classes": list(CLASSES), "model": model.state_dict(), "ema": None})
    pixels, labels = make_sprites(120, seed=1)
    np.save(root / "items_16x16.npy", pixels)
    np.save(root / "items_labels_16x16.npy", np.eye(5, dtype=np.float32)[labels])
    (root / "items_classes.json").write_text(json.dumps(list(CLASSES)))  # the run's class names
    return root


def test_eval_writes_a_table_and_json(run_and_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    code = main(["eval", "--run", str(run_and_data / "run"), "--data",
                 str(run_and_data / "items_16x16.npy"), "--n", "24", "--steps", "2",
                 "--guidance", "2", "--classifier-steps", "10", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["n_samples"] == 24 and result["n_real"] == 24 and result["steps"] == 2
    for key in ("fid", "fid_noise_floor", "conditional_accuracy", "memorisation",
                "memorisation_real", "samples_per_second", "classifier_accuracy"):
        assert math.isfinite(result[key]), key
    assert result["fid"] > result["fid_noise_floor"]  # an untrained network is far from data
    assert "FID noise floor" in capsys.readouterr().out


def test_eval_over_seeds_shows_min_mean_and_diversity(run_and_data, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    code = main(["eval", "--run", str(run_and_data / "run"), "--data",
                 str(run_and_data / "items_16x16.npy"), "--n", "20", "--steps", "1", "--seeds",
                 "2", "--seed", "5", "--classifier-steps", "10", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["seeds"] == [5, 6] and len(r["fid_each"]) == 2
    assert r["fid"] == pytest.approx(sum(r["fid_each"]) / 2) and r["fid_min"] == min(r["fid_each"])
    assert set(r["diversity_per_class"]) == set(CLASSES) and math.isfinite(r["diversity"])
    text = capsys.readouterr().out
    assert "FID min" in text and "diversity" in text and "mean of 2 seeds" in text


def test_eval_takes_the_class_names_train_was_given(run_and_data, tmp_path, monkeypatch):
    """A run trained with --classes names.json evaluates on data with no names beside it."""
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    pixels = np.load(run_and_data / "items_16x16.npy")
    np.save(tmp_path / "bare_16x16.npy", pixels)  # no bare_classes.json beside it
    labels = tmp_path / "bare_labels_16x16.npy"
    labels.write_bytes((run_and_data / "items_labels_16x16.npy").read_bytes())
    common = ["eval", "--run", str(run_and_data / "run"), "--data", str(tmp_path /
              "bare_16x16.npy"), "--labels", str(labels), "--n", "12", "--steps", "1",
              "--classifier-steps", "10"]
    assert main([*common, "--json", str(tmp_path / "a.json")]) == 2  # class0.. are not the run's
    assert main([*common, "--classes", str(run_and_data / "items_classes.json"), "--json",
                 str(tmp_path / "b.json")]) == 0
    assert main([*common, "--classes", ",".join(CLASSES), "--json",
                 str(tmp_path / "c.json")]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--n", "1"], "--n: 1 is too small: it must be >= 2"),
    (["--data", "nowhere.npy"], "data 'nowhere.npy' does not exist"),
    (["--classifier-steps", "0"], "--classifier-steps: 0 is too small"),
    (["--guidance", "x"], "--guidance: 'x' is not a number"),
])
def test_eval_bad_input_is_one_line(run_and_data, capsys, flags, message):
    try:  # a bad flag stops in argparse (SystemExit 2), bad data in the command (returns 2)
        code = main(["eval", "--run", str(run_and_data / "run"), "--data",
                     str(run_and_data / "items_16x16.npy"), *flags])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_eval_refuses_data_with_other_classes(run_and_data, tmp_path, capsys):
    np.save(tmp_path / "x_16x16.npy", np.load(run_and_data / "items_16x16.npy"))
    np.save(tmp_path / "x_labels_16x16.npy", np.load(run_and_data / "items_labels_16x16.npy"))
    (tmp_path / "x_classes.json").write_text('["a", "b", "c", "d", "e"]')
    code = main(["eval", "--run", str(run_and_data / "run"), "--data",
                 str(tmp_path / "x_16x16.npy"), "--classifier-steps", "1", "--n", "4",
                 "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == 2 and "are not the data's (a, b, c, d, e)" in err, err
