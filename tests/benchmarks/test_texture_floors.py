"""benchmarks/texture_floors.py at toy sizes, without ../shared/data: it finds the sets in a
folder (here a fake one drawn from the built-in sprites), always adds the built-in sprites, and
its rows show blur far above the floor and mild noise near it."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff.data.datasets import Dataset
from minidiff.data.sprites import CLASSES, make_sprites

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("texture_floors",
                                              REPO / "benchmarks" / "texture_floors.py")
texture_floors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(texture_floors)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_without_the_data_folder_it_measures_the_sprites(tmp_path, capsys):
    rows = texture_floors.main(["--data", str(tmp_path / "absent"), "--n-sprites", "300",
                                "--more-patches", "8192"])
    assert [r["dataset"] for r in rows] == ["sprites"] and rows[0]["n_half"] == 150
    r = rows[0]
    assert r["swd_blur"] > 5 * r["swd_floor"] and r["swd_noise_0.02"] < 2 * r["swd_floor"]
    assert r["hf_ratio_blur"] < 0.7 and abs(r["hf_ratio_floor"] - 1) < 0.1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| sprites | 150 |")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")


def test_it_finds_the_sets_in_the_data_folder(tmp_path):
    pixels, labels = make_sprites(40, seed=2)  # stands in for emoji_google
    np.save(tmp_path / "emoji_google_16x16.npy", pixels)
    np.save(tmp_path / "emoji_google_labels_16x16.npy", np.eye(5, dtype=np.float32)[labels])
    (tmp_path / "emoji_classes.json").write_text(json.dumps(list(CLASSES)))
    found = texture_floors.datasets(tmp_path, 16, n_sprites=30)
    assert [d.name for d in found] == ["emoji_google", "sprites"]
    assert [len(d) for d in found] == [40, 30] and found[0].classes == list(CLASSES)


def test_the_halves_are_disjoint_and_seeded():
    tags = torch.arange(41.0)  # image i is filled with the number i; one is left over
    dataset = Dataset(tags[:, None, None, None].expand(41, 3, 8, 8), torch.eye(5)[tags.long() % 5],
                      list(CLASSES), "tags")
    a, b = texture_floors.halves(dataset)
    seen_a, seen_b = set(a.images[:, 0, 0, 0].tolist()), set(b.images[:, 0, 0, 0].tolist())
    assert len(seen_a) == len(seen_b) == 20 and not seen_a & seen_b
    assert torch.equal(texture_floors.halves(dataset)[1].images, b.images)
    assert not torch.equal(texture_floors.halves(dataset, seed=1)[1].images, b.images)
