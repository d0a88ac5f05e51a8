"""benchmarks/train_quality.py at toy sizes: recipes parse by TrainConfig's rules, a run trains,
is measured and drawn, and --only-eval measures the kept run again. Its numbers mean nothing."""

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("train_quality",
                                              REPO / "benchmarks" / "train_quality.py")
train_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_quality)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_recipes_parse_by_the_fields_rules():
    assert train_quality.parse_recipe("default=") == ("default", {})
    name, overrides = train_quality.parse_recipe("x=n_feat=32,hflip=on,lr=1e-3,epochs=none")
    assert name == "x" and overrides == {"n_feat": 32, "hflip": True, "lr": 1e-3, "epochs": None}
    assert train_quality.parse_recipe("c=preset=course")[1] == {"preset": "course"}
    for bad, words in [("x", "NAME=key=value"), ("x=nfeat=3", "TrainConfig field"),
                       ("x=n_feat=abc", "n_feat: 'abc' is not a whole number"),
                       ("x=arch=big", "is not one of")]:
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            train_quality.parse_recipe(bad)


def test_a_recipe_trains_is_measured_and_drawn(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    keep, out = tmp_path / "keep", tmp_path / "tq.json"
    data = ["--n-images", "60", "--n", "20", "--classifier-steps", "5", "--sample-steps", "2",
            "--keep", str(keep)]
    train_quality.main([*data, "--steps", "2", "--seeds", "0,1", "--recipe",
                        "tiny=n_feat=8,batch_size=16", "--guidance", "2", "--json", str(out),
                        "--markdown", str(tmp_path / "tq.md")])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["recipe"], r["guidance"], r["steps"]) for r in rows] == [("tiny", 1.0, 2),
                                                                       ("tiny", 2.0, 2)]
    assert rows[0]["n_samples"] == 20 and len(rows[0]["fid_each"]) == 2
    grid = np.asarray(__import__("PIL.Image").Image.open(rows[0]["grid"]))
    assert grid.shape[1] > grid.shape[0]  # 5 real | gap | 5 generated columns, 8 rows
    table = (tmp_path / "tq.md").read_text()
    assert "| tiny | 2 | 2 |" in table and "FID min" in table and "patch SWD" in table
    assert table.splitlines()[2].count("|") == table.splitlines()[4].count("|") == 15
    assert rows[0]["swd_mean"] > 0 and rows[0]["hf_ratio_floor_mean"] > 0
    capsys.readouterr()
    train_quality.main([*data, "--only-eval", "--seeds", "3"])  # every kept run of the data
    assert "tiny       g 1         2 steps" in capsys.readouterr().out
