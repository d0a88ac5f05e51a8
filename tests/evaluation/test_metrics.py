"""FID, memorisation, accuracy, per-class diversity, the seed summary and the eval command (with
texture, whose own tests are in tests/evaluation/test_texture.py):
exact small cases, then plumbing. The
feature classifier itself: tests/evaluation/test_classifier.py."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from minidiff.checkpoint import save_checkpoint
from minidiff.cli import main
from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.evaluation.metrics import (
    NEAR_COPY_RMS,
    class_diversity,
    conditional_accuracy,
    fid,
    frechet_distance,
    mean_pairwise_distance,
    memorisation,
    nearest_rms,
    summarise,
)
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
                "memorisation_real", "samples_per_second", "classifier_accuracy", "swd",
                "swd_floor", "swd_class", "swd_class_floor", "hf_ratio", "hf_ratio_floor"):
        assert math.isfinite(result[key]), key
    assert result["fid"] > result["fid_noise_floor"]  # an untrained network is far from data
    assert result["swd"] > 2 * result["swd_floor"] and result["swd_class"] > result["swd"] / 2
    assert result["hf_ratio"] > 1.5 > 0.8 < result["hf_ratio_floor"] < 1.2  # noise is not crisp
    assert set(result["swd_per_class"]) == set(result["swd_per_class_floor"]) == set(CLASSES)
    text = capsys.readouterr().out
    assert "FID noise floor" in text and "patch SWD" in text and "high-frequency ratio" in text


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
    assert r["swd"] == pytest.approx(sum(r["swd_each"]) / 2) and len(r["hf_ratio_each"]) == 2
    assert set(r["swd_per_class"]) == set(CLASSES) and r["swd_floor_each"][0] > 0
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
