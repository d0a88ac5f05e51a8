"""minidiff/data/images.py: the one grid rule (one column per class), the GIF whose last frame is
the PNG, and file names that say what they hold (issue 16 item 6, issue 13 item 9)."""

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.data.images import by_class, check_suffix, columns, grid, save_gif, save_grid


@pytest.mark.parametrize("n, k, width", [(40, 5, 5), (16, 2, 2), (3, 5, 3), (32, 0, 8),
                                         (36, 0, 6), (6, 0, 3), (7, 0, 3), (1, 0, 1), (12, 1, 4)])
def test_columns_one_per_class_else_a_full_rectangle(n, k, width):
    assert columns(n, k) == width


def test_no_half_empty_last_row_when_n_allows_a_rectangle():
    for n in range(1, 200):
        width = columns(n)
        rows = -(-n // width)
        if any(n % w == 0 and w <= 3 * (n // w) for w in range(int(np.ceil(np.sqrt(n))), n + 1)):
            assert n % width == 0 and width <= 3 * rows, n


def test_by_class_puts_each_class_in_a_column():
    hero = np.zeros((3, 2, 2, 3), np.uint8)
    food = np.full((1, 2, 2, 3), 7, np.uint8)
    tiles = by_class([hero, food])
    assert tiles[:, 0, 0, 0].tolist() == [0, 7, 0, 255, 0, 255]  # white below a short column
    canvas = grid(tiles, nrow=2, pad=0)
    assert canvas.shape == (6, 4, 3) and (canvas[:, 2:][2:] == 255).all()


def test_gif_last_frame_is_the_png(tmp_path):
    """Same normalisation ("clip") in both; few colours, so the GIF palette is exact."""
    frames = [torch.linspace(-3, 3, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4).round() / 2 + s
              for s in (0.5, 0.0)]
    save_grid(frames[-1], tmp_path / "x.png")
    save_gif(frames, tmp_path / "x.gif")
    gif = Image.open(tmp_path / "x.gif")
    gif.seek(gif.n_frames - 1)
    png = np.asarray(Image.open(tmp_path / "x.png").convert("RGB"))
    assert np.array_equal(np.asarray(gif.convert("RGB")), png)


def test_uint8_pixels_are_saved_as_they_are(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    save_grid(torch.from_numpy(pixels), tmp_path / "p.png", nrow=4, scale=1)
    saved = np.asarray(Image.open(tmp_path / "p.png"))
    assert np.array_equal(saved[1:4, 1:4], pixels[0])


@pytest.mark.parametrize("name, kind", [("x.jpg", "grid"), ("x.png", "gif"), ("x", "npy")])
def test_a_name_promising_another_format_is_refused(name, kind):
    with pytest.raises(ValueError, match="minidiff writes this as"):
        check_suffix(name, kind)
