"""Datasets from the built-in sprites, .npy files and image folders; bad input; the data CLI."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from minidiff.cli import main as cli_main
from minidiff.data.datasets import Dataset, dataset_hash, load_dataset
from minidiff.data.sprites import CLASSES
from minidiff.utils.errors import MinidiffError


def random_pixels(n, h, w=None, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w or h, 3), dtype=np.uint8)


def save_npy(folder, name, pixels, labels=None):
    """The course's layout: `<name>_HxW.npy` and, beside it, `<name>_labels_HxW.npy`."""
    size = f"{pixels.shape[1]}x{pixels.shape[2]}"
    np.save(folder / f"{name}_{size}.npy", pixels)
    if labels is not None:
        np.save(folder / f"{name}_labels_{size}.npy", labels)
    return folder / f"{name}_{size}.npy"


def test_builtin_sprites():
    ds = load_dataset(n=25)
    assert isinstance(ds, Dataset) and len(ds) == 25 and ds.name == "sprites"
    assert ds.images.shape == (25, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.images.min() >= -1 and ds.images.max() == 1  # the white background
    assert ds.classes == list(CLASSES) and torch.equal(ds.contexts.sum(1), torch.ones(25))
    big = load_dataset("sprites", n=25, image_size=32)
    assert torch.equal(big.images[:, :, ::2, ::2], ds.images)  # pixel art doubled, not blurred


def test_pixels_scale_like_the_course(tmp_path):
    """ToTensor then Normalize(0.5, 0.5): 0 -> -1, 255 -> 1, x -> x / 127.5 - 1."""
    pixels = random_pixels(3, 16)
    ds = load_dataset(str(save_npy(tmp_path, "tiny", pixels)))
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 127.5 - 1
    assert torch.allclose(ds.images.double(), expected, atol=1e-6)
    assert ds.contexts.shape == (3, 0) and ds.classes == [] and ds.name == "tiny"


@settings(max_examples=15)
@given(n=st.integers(1, 12), k=st.integers(1, 6), side=st.sampled_from([16, 20, 32]),
       form=st.sampled_from(["float64", "float32", "uint8", "indices"]), seed=st.integers(0, 99))
@example(n=1, k=1, side=16, form="indices", seed=0)
def test_npy_with_labels(n, k, side, form, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, k, n)
    index[-1] = k - 1  # indices only say K through their largest value
    labels = index if form == "indices" else np.eye(k, dtype=form)[index]
    with tempfile.TemporaryDirectory() as folder:
        path = save_npy(Path(folder), "toy", random_pixels(n, side, seed=seed), labels)
        ds = load_dataset(str(path), image_size=16)
    assert ds.images.shape == (n, 3, 16, 16)
    assert torch.equal(ds.contexts, torch.eye(k)[torch.from_numpy(index)])
    assert ds.classes == [f"class{i}" for i in range(k)]


def test_class_names_from_argument_or_json_beside(tmp_path):
    path = save_npy(tmp_path, "items", random_pixels(4, 16), np.eye(2)[[0, 1, 1, 0]])
    assert load_dataset(str(path), classes="sword, shield").classes == ["sword", "shield"]
    assert load_dataset(str(path), classes=["a", "b"]).classes == ["a", "b"]
    (tmp_path / "items_classes.json").write_text(json.dumps(
        {"classes": ["weapon", "armour"], "files": {"weapon": ["x.png"]}}))
    assert load_dataset(str(path)).classes == ["weapon", "armour"]
    with pytest.raises(MinidiffError, match="3 class names"):
        load_dataset(str(path), classes="a,b,c")


def test_resizing_averages_areas_and_pads_to_square(tmp_path):
    big = np.kron(random_pixels(2, 8), np.ones((1, 4, 4, 1), np.uint8))  # 32x32 of 4x4 blocks
    small = load_dataset(str(save_npy(tmp_path, "big", big)), image_size=8)
    assert torch.allclose(small.images, load_dataset(str(save_npy(
        tmp_path, "small", big[:, ::4, ::4])), image_size=8).images)
    wide = np.zeros((1, 8, 16, 3), np.uint8)  # black, twice as wide as tall
    ds = load_dataset(str(save_npy(tmp_path, "wide", wide)), image_size=16)
    assert (ds.images[0, :, :4] == 1).all() and (ds.images[0, :, 4:12] == -1).all()


def test_shrinking_averages_fine_detail_instead_of_aliasing(tmp_path):
    """A 48x48 checkerboard shrunk 3x: a box filter gives grey, point sampling black or white."""
    board = (np.indices((48, 48)).sum(0) % 2 * 255).astype(np.uint8)
    board = np.repeat(board[None, :, :, None], 3, axis=3)  # (1, 48, 48, 3)
    from_npy = load_dataset(str(save_npy(tmp_path, "board", board)), image_size=16)
    (tmp_path / "folder").mkdir()
    Image.fromarray(board[0]).save(tmp_path / "folder" / "board.png")
    from_folder = load_dataset(str(tmp_path / "folder"), image_size=16)
    for ds in (from_npy, from_folder):
        assert ds.images.abs().max() < 0.2, "expected the 3x3 means, 4/9 or 5/9 white"


def make_image_folder(root):
    """hero/ with an RGBA PNG and a JPEG; food/ with a GIF; a non-image file that is ignored."""
    (root / "hero").mkdir(parents=True)
    (root / "food").mkdir()
    clear = np.zeros((16, 16, 4), np.uint8)
    clear[4:8, 4:8] = (255, 0, 0, 255)  # a red square; the rest fully transparent
    Image.fromarray(clear, "RGBA").save(root / "hero" / "a.png")
    Image.fromarray(random_pixels(1, 32)[0]).save(root / "hero" / "b.jpg")
    Image.fromarray(random_pixels(1, 16, 24)[0]).save(root / "food" / "c.gif")
    (root / "food" / "notes.txt").write_text("not an image")


def test_image_folder_with_class_subfolders(tmp_path):
    make_image_folder(tmp_path / "art")
    ds = load_dataset(str(tmp_path / "art"))
    assert ds.classes == ["food", "hero"] and ds.name == "art"
    assert ds.images.shape == (3, 3, 16, 16)
    assert torch.equal(ds.contexts, torch.tensor([[1.0, 0], [0, 1], [0, 1]]))
    red = ds.images[1]  # hero/a.png
    assert (red[:, 0, 0] == 1).all(), "transparency must become white"
    assert torch.equal(red[:, 5, 5], torch.tensor([1.0, -1, -1]))


def test_image_folder_without_classes(tmp_path):
    for i in range(3):
        Image.fromarray(random_pixels(1, 16, seed=i)[0]).save(tmp_path / f"{i}.png")
    ds = load_dataset(str(tmp_path), n=2, seed=1)
    assert ds.images.shape == (2, 3, 16, 16) and ds.contexts.shape == (2, 0)


def test_dataset_hash_follows_content_not_name(tmp_path):
    pixels = random_pixels(5, 16)
    first = load_dataset(str(save_npy(tmp_path, "one", pixels)))
    again = load_dataset(str(save_npy(tmp_path, "two", pixels)))
    assert dataset_hash(first) == dataset_hash(again) and len(dataset_hash(first)) == 16
    pixels[2, 3, 4, 0] ^= 1
    assert dataset_hash(load_dataset(str(save_npy(tmp_path, "three", pixels)))) != dataset_hash(
        first)
    assert dataset_hash(load_dataset(n=10, seed=0)) != dataset_hash(load_dataset(n=10, seed=1))


def bad_inputs(tmp_path):
    """(what to load, the message it must give): each is one line naming problem and fix."""
    ok = save_npy(tmp_path, "ok", random_pixels(4, 16))
    np.save(tmp_path / "rank.npy", np.zeros((4, 16, 16), np.uint8))
    np.save(tmp_path / "float.npy", np.zeros((4, 16, 16, 3), np.float32))
    np.save(tmp_path / "rgba.npy", np.zeros((4, 16, 16, 4), np.uint8))
    np.save(tmp_path / "chw.npy", np.zeros((4, 3, 16, 16), np.uint8))
    np.save(tmp_path / "labels.npy", np.eye(5)[:3])
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    (tmp_path / "tiny").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny" / "t.png")
    return [
        ({"data": str(tmp_path / "missing.npy")}, "does not exist"),
        ({"data": str(tmp_path / "rank.npy")}, r"expected uint8 \(N, H, W, 3\)"),
        ({"data": str(tmp_path / "float.npy")}, "dtype float32; expected uint8"),
        ({"data": str(tmp_path / "rgba.npy")}, r"shape \(4, 16, 16, 4\)"),
        ({"data": str(tmp_path / "chw.npy")}, "channels first"),
        ({"data": str(tmp_path / "junk.npy")}, "cannot read data"),
        ({"data": str(ok), "labels": str(tmp_path / "labels.npy")}, "for 4 images"),
        ({"data": str(tmp_path / "empty")}, "no images"),
        ({"data": str(tmp_path / "broken")}, "cannot read image"),
        ({"data": str(tmp_path / "tiny")}, "smaller than image_size=16"),
        ({"data": str(ok), "image_size": 32}, "smaller than image_size=32"),
        ({"data": str(ok), "image_size": 14}, "multiple of 4"),
    ]


def test_bad_input_gives_one_line(tmp_path):
    for kwargs, match in bad_inputs(tmp_path):
        with pytest.raises(MinidiffError, match=match) as info:
            load_dataset(**kwargs)
        assert "\n" not in str(info.value), kwargs


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    for kwargs, match in bad_inputs(tmp_path)[:10]:
        argv = ["data", "preview", "--data", kwargs["data"], "--out", str(tmp_path / "p.png")]
        if "labels" in kwargs:
            argv += ["--labels", kwargs["labels"]]
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("minidiff data: error:") and "\n" not in err
        assert __import__("re").search(match, err), (match, err)


def test_cli_preview_and_export_round_trip(tmp_path):
    assert cli_main(["data", "preview", "-n", "20", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size[0] > 16 * 8
    assert cli_main(["data", "export", "-n", "20", "--out", str(tmp_path / "out")]) == 0
    pixels = np.load(tmp_path / "out" / "sprites_16x16.npy")
    labels = np.load(tmp_path / "out" / "sprites_labels_16x16.npy")
    assert pixels.shape == (20, 16, 16, 3) and pixels.dtype == np.uint8
    assert labels.shape == (20, 5) and labels.dtype == np.float64
    names = json.loads((tmp_path / "out" / "sprites_classes.json").read_text())["classes"]
    assert names == list(CLASSES)
    back = load_dataset(str(tmp_path / "out" / "sprites_16x16.npy"))
    assert dataset_hash(back) == dataset_hash(load_dataset(n=20)) and back.classes == names


# --- issue 13: sizes bounded before allocating, files named for what they are, labels, order ----


def png_header_only(path, width, height):
    """A PNG whose header claims width x height but holds no pixels: what a decompression bomb
    looks like to a reader that checks the size before decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size, match", [
    ((1, 100000), "1x100000, over 4096 pixels on a side"),
    ((20000, 20000), "bomb.png claims 400000000 pixels, over Pillow")])
def test_huge_images_are_refused_before_decoding(tmp_path, size, match):
    """Issue 13 case 7: a 1x100000 PNG is not padded to a 40 GB square; 20000x20000 is one line
    (not Pillow's DecompressionBombError)."""
    folder = tmp_path / "art"
    folder.mkdir()
    Image.fromarray(random_pixels(1, 16)[0]).save(folder / "a.png")
    if size == (1, 100000):
        Image.new("RGB", size, "white").save(folder / "thin.png")  # a real, tiny file
    else:
        png_header_only(folder / "bomb.png", *size)
    with pytest.raises(MinidiffError, match=match) as info:
        load_dataset(str(folder))
    assert "\n" not in str(info.value)


def npy_header_only(path, shape, dtype=np.uint8, tail=b"\0" * 64):
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": np.dtype(dtype).str,
                                                    "fortran_order": False, "shape": shape})
        file.write(tail)
    return path


def size_inputs(tmp_path):
    """(load_dataset arguments, the message): each size-like input refused before allocating."""
    ok = save_npy(tmp_path, "ok", random_pixels(4, 16))
    np.save(tmp_path / "index.npy", np.array([0, 10**7, 1, 2]))
    np.save(tmp_path / "wide.npy", np.zeros((4, 1001), np.float32))
    np.savez(tmp_path / "arrays.npz", x=random_pixels(4, 16))
    (tmp_path / "arrays.npz").rename(tmp_path / "renamed.npy")
    Image.fromarray(random_pixels(1, 16)[0]).save(tmp_path / "sprite.png")
    return [
        ({"data": str(npy_header_only(tmp_path / "claims.npy", (10**12, 16, 16, 3)))},
         r"header says shape \(1000000000000, 16, 16, 3\) .* but the file holds 64"),
        ({"data": str(npy_header_only(tmp_path / "short.npy", (4, 16, 16, 3)))},
         "truncated or damaged"),
        ({"data": str(ok), "labels": str(tmp_path / "index.npy")},
         "class index 10000000, which would make 10000001 classes"),
        ({"data": str(ok), "labels": str(tmp_path / "wide.npy")}, "1001 columns, over 1000"),
        ({"data": str(tmp_path / "renamed.npy")},
         r"it is a zip archive \(a .npz\?\), not a .npy array"),
        ({"data": str(tmp_path / "sprite.png")},
         "it is a PNG image, not a .npy array; pass the folder"),
        ({"n": 10**9}, r"1000000000 images of 16x16 .* need 2861.0 GiB"),
        ({"image_size": 512}, "20000 images of 512x512"),
    ]


def test_size_like_inputs_are_bounded_with_one_line(tmp_path):
    for kwargs, match in size_inputs(tmp_path):
        with pytest.raises(MinidiffError, match=match) as info:
            load_dataset(**kwargs)
        assert "\n" not in str(info.value), kwargs


def test_cli_names_an_npz_or_a_png_passed_as_data(tmp_path, capsys):
    for kwargs, match in size_inputs(tmp_path)[4:6]:
        argv = ["data", "preview", "--data", kwargs["data"], "--out", str(tmp_path / "p.png")]
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and __import__("re").search(match, err), (match, err)


@pytest.mark.parametrize("row, what", [([np.nan, 1, 0], "NaN or inf"), ([np.inf, 0, 0], "NaN"),
                                       ([0.5, 0.5, 0], "not one-hot"), ([0, 0, 0], "not one-hot"),
                                       ([1, 1, 0], "not one-hot"), ([2, 0, 0], "not one-hot")])
def test_labels_that_are_not_one_hot_are_refused(tmp_path, row, what):
    """Issue 13 case 9: hard labels only (mixing is a sampling-time choice), refused by row."""
    labels = np.eye(3)[[0, 1, 2, 0]]
    labels[2] = row
    path = save_npy(tmp_path, "toy", random_pixels(4, 16), labels)
    with pytest.raises(MinidiffError, match=f"row 2 is .*{what}") as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)


def test_class_folders_in_natural_order(tmp_path):
    """Issue 13 case 9: folders 1, 2, 10 are classes 1, 2, 10 (not 1, 10, 2)."""
    for k, name in enumerate(["10", "2", "1", "item9", "item10"]):
        (tmp_path / name).mkdir()
        Image.fromarray(random_pixels(1, 16, seed=k)[0]).save(tmp_path / name / "x.png")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ["1", "2", "10", "item9", "item10"]
    for k, name in enumerate(["10", "2", "1", "item9", "item10"]):  # each image under its name
        i = int(ds.contexts[:, ds.classes.index(name)].argmax())
        expected = random_pixels(1, 16, seed=k)[0, 0, 0, 0] / 127.5 - 1
        assert abs(float(ds.images[i, 0, 0, 0]) - expected) < 1e-6


def test_a_class_named_by_a_number_is_sampled_by_its_name():
    """`sample --class 10` asks for the class named 10, not index 10."""
    from minidiff.noising import make_schedule
    from minidiff.pipeline import Pipeline
    from minidiff.unet import UnetConfig, build_unet

    model = build_unet(UnetConfig(n_feat=8, n_cfeat=3))
    pipe = Pipeline(model, make_schedule("linear", 10), ["1", "2", "10"], {}, Path("x"))
    assert pipe.contexts(1, "10").tolist() == [[0, 0, 1]]
    assert pipe.contexts(1, "1").tolist() == [[1, 0, 0]]
    assert pipe.contexts(1, 0).tolist() == [[1, 0, 0]]  # an int is still an index
