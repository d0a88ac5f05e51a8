"""Patch SWD and the high-frequency ratio (`minidiff.evaluation.texture`) on the built-in sprites:
blur is seen far above the real-vs-real floor, mild noise is not, identical sets score 0 and 1,
and neither measure depends on the order of the images."""

import pytest
import torch

from minidiff.data.sprites import CLASSES, make_sprites
from minidiff.evaluation.texture import (
    add_noise,
    box_blur,
    class_swd,
    hf_ratio,
    mix_weighted,
    patch_swd,
)
from minidiff.utils.errors import MinidiffError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def halves():
    """Two disjoint halves of 600 sprites, in [-1, 1], with their class labels."""
    pixels, labels = make_sprites(600, seed=0)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels = torch.from_numpy(labels).long()
    return (images[:300], labels[:300]), (images[300:], labels[300:])


def test_identical_sets_score_zero_and_one(halves):
    (a, _), _ = halves
    assert patch_swd(a, a) == pytest.approx(0, abs=1e-9)
    assert patch_swd(a, a.clone()[:150]) < patch_swd(a, box_blur(a)) / 10
    assert hf_ratio(a, a) == pytest.approx(1.0)


def test_blur_rises_far_above_the_floor_and_noise_does_not(halves):
    (a, _), (b, _) = halves
    floor = patch_swd(b, a)
    blurred, noisy = patch_swd(box_blur(b), a), patch_swd(add_noise(b, 0.05), a)
    assert 1 < floor < 60  # x 1e3: a readable number, not 0 for different images
    assert blurred > 5 * floor
    assert noisy < 2 * floor and blurred > 4 * noisy
    assert hf_ratio(box_blur(b), a) < 0.7 < 0.95 < hf_ratio(b, a) < 1.05


def test_neither_measure_depends_on_the_order_of_the_images(halves):
    (a, _), (b, _) = halves
    g = torch.Generator().manual_seed(1)
    shuffled_a, shuffled_b = a[torch.randperm(len(a), generator=g)], b.flip(0)
    assert patch_swd(shuffled_b, shuffled_a) == pytest.approx(patch_swd(b, a), rel=1e-6)
    assert hf_ratio(shuffled_b, shuffled_a) == pytest.approx(hf_ratio(b, a), rel=1e-9)


def test_swd_is_seeded_and_symmetric(halves):
    (a, _), (b, _) = halves
    assert patch_swd(b, a, seed=3) == patch_swd(b, a, seed=3)
    assert patch_swd(b, a, seed=3) != patch_swd(b, a, seed=4)
    assert patch_swd(b, a) == pytest.approx(patch_swd(a, b), rel=1e-6)


def test_sets_of_different_sizes_are_matched_by_quantile(halves):
    (a, _), (b, _) = halves
    # a set against itself repeated is the same distribution: 0; against a blur of it: not
    assert patch_swd(a[:100], a[:100].repeat(3, 1, 1, 1)) == pytest.approx(0, abs=1e-9)
    assert patch_swd(b[:100], a) > 0 and patch_swd(box_blur(b[:100]), a) > 5 * patch_swd(b, a)


def test_per_class_swd_and_its_mix_weighted_mean(halves):
    (a, labels_a), (b, labels_b) = halves
    per_class = class_swd(b, labels_b, a, labels_a, list(CLASSES), n_patches=2**12)
    assert list(per_class) == list(CLASSES) and all(v > 0 for v in per_class.values())
    same = class_swd(a, labels_a, a, labels_a, list(CLASSES), n_patches=2**12)
    assert all(v == pytest.approx(0, abs=1e-9) for v in same.values())
    # the weights are the classes' shares of the labels; a class missing on one side is skipped
    values = {"x": 1.0, "y": None, "z": 4.0}
    assert mix_weighted(values, torch.tensor([0, 0, 0, 1, 2])) == pytest.approx(7 / 4)
    missing = class_swd(b[labels_b != 2], labels_b[labels_b != 2], a, labels_a, list(CLASSES),
                        n_patches=2**12)
    assert missing["food"] is None and missing["hero"] is not None


def test_bad_input_is_one_clear_error(halves):
    (a, _), _ = halves
    with pytest.raises(MinidiffError, match="one shape"):
        patch_swd(a, a[:, :1])
    with pytest.raises(MinidiffError, match="at least 5x5"):
        patch_swd(a[:, :, :4, :4], a[:, :, :4, :4])
    with pytest.raises(MinidiffError, match="at least one image"):
        patch_swd(a[:0], a)
    with pytest.raises(MinidiffError, match="not flat"):
        hf_ratio(a, torch.zeros_like(a))
