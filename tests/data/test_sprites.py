"""The built-in sprites: shapes, balance, determinism, distinctness, and that classes differ."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minidiff.data import sprites
from minidiff.data.sprites import CLASSES, make_sprites


def test_classes_are_the_courses_five_in_order():
    assert CLASSES == ("hero", "non-hero", "food", "spell", "side-facing")


@given(n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
@example(n=0, seed=0)
@example(n=1, seed=0)
@example(n=7, seed=3)
def test_layout_balance_and_determinism(n, seed):
    images, labels = make_sprites(n, seed)
    assert images.shape == (n, 16, 16, 3) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1, f"unbalanced classes: {counts}"
    again_images, again_labels = make_sprites(n, seed)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_sprite_is_drawn_on_white(seed):
    images, _ = make_sprites(100, seed)
    white = (images == 255).all(-1)  # (N, 16, 16)
    assert white[:, 0, 0].mean() > 0.9, "corners should be background"
    share = white.mean(axis=(1, 2))
    assert share.min() > 0.2 and share.max() < 0.97, "each sprite: some drawing, some background"


def test_twenty_thousand_sprites_are_all_distinct():
    images, _ = make_sprites(20000, seed=0)
    assert sprites._duplicates(images).size == 0


def test_different_seeds_draw_different_sprites():
    assert not np.array_equal(make_sprites(20, 1)[0], make_sprites(20, 2)[0])


def test_duplicates_are_found_and_redrawn(monkeypatch):
    twins = np.zeros((4, 16, 16, 3), np.uint8)
    twins[2] = 1
    assert sprites._duplicates(twins).tolist() == [1, 3]
    real_draw, calls = sprites._draw, []

    def draw_copies_first(labels, rng):  # the first batch is all one image
        calls.append(len(labels))
        drawn = real_draw(labels, rng)
        return np.repeat(drawn[:1], len(labels), axis=0) if len(calls) == 1 else drawn

    monkeypatch.setattr(sprites, "_draw", draw_copies_first)
    images, _ = make_sprites(30, seed=0)
    assert calls[:2] == [30, 29] and sprites._duplicates(images).size == 0


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1))
def test_classes_are_told_apart_by_their_mean_image(seed):
    """A nearest-class-mean classifier on raw pixels must beat chance (20%) by far."""
    train, train_labels = make_sprites(1500, seed)
    test, test_labels = make_sprites(500, seed + 1)
    train, test = (a.reshape(len(a), -1).astype(np.float32) for a in (train, test))
    means = np.stack([train[train_labels == k].mean(0) for k in range(len(CLASSES))])
    guess = ((test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = (guess == test_labels).mean()
    assert accuracy > 0.75, f"nearest-mean accuracy {accuracy:.2f}: classes look alike"


def test_too_many_sprites_is_refused_before_drawing():
    """Issue 13 case 7: `--n-images 1000000000` is one line, not a MemoryError."""
    import pytest

    from minidiff.utils.errors import MinidiffError

    with pytest.raises(MinidiffError, match=f"more than the {sprites.MAX_SPRITES} built-in"):
        make_sprites(sprites.MAX_SPRITES + 1)
