"""benchmarks/train_speed.py at a toy size: `--variant` reads several TrainConfig fields at once
(and may change the arch), and each variant is timed and named in its own row."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # train_speed.py imports train_quality beside it
spec = importlib.util.spec_from_file_location("train_speed", REPO / "benchmarks" / "train_speed.py")
train_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_speed)


def test_a_variant_reads_several_fields_with_their_types():
    assert train_speed._parse_variant("patch=1,n_feat=16,lr=2e-3,compile=true,arch=course") == {
        "patch": 1, "n_feat": 16, "lr": 2e-3, "compile": True, "arch": "course"}


@pytest.mark.parametrize("text", ["not_a_field=1", "patch=1,n_feat", "patch"])
def test_a_bad_variant_names_itself(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--variant .*not key=value"):
        train_speed._parse_variant(text)


def test_a_bad_value_is_named_by_its_field():
    with pytest.raises(argparse.ArgumentTypeError, match="--variant n_feat=many: n_feat"):
        train_speed._parse_variant("n_feat=many")


def test_the_toy_run_times_each_variant(capsys):
    train_speed.main(["--arch", "minidiff", "--n-feat", "8", "--batch-size", "4", "--n-images",
                      "16", "--steps", "1", "--warmup", "0", "--rounds", "1",
                      "--variant", "patch=1,n_feat=8", "--variant", "arch=course,n_feat=8"])
    rows = [line.split("images/s")[0].rsplit(None, 1)[0].strip()
            for line in capsys.readouterr().out.splitlines() if "images/s" in line]
    assert rows == ["course loop", "trainer (default recipe)", "trainer, patch=1,n_feat=8",
                    "trainer, arch=course,n_feat=8"]
