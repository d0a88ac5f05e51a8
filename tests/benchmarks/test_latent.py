"""benchmarks/latent.py at toy sizes: both pipelines train at fixed steps, are measured and
drawn; `--train latent` trains the latent pipeline again beside the kept pixel run; a bad
`--train` is one line. Its numbers mean nothing."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # latent.py imports train_quality beside it
spec = importlib.util.spec_from_file_location("latent", REPO / "benchmarks" / "latent.py")
latent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latent)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["--n-images", "200", "--n", "12", "--seeds", "0", "--classifier-steps", "5",
        "--n-feat", "8", "--ae-n-feat", "8", "--timing-batch", "4"]


def test_both_pipelines_train_then_the_latent_one_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    keep, out = tmp_path / "keep", tmp_path / "latent.json"
    latent.main([*TINY, "--steps", "2,3,2", "--keep", str(keep), "--json", str(out),
                 "--markdown", str(tmp_path / "latent.md")])
    first = json.loads(out.read_text())
    assert (first["pixel"]["steps"], first["latent"]["steps"]) == (2, 2)
    assert first["latent"]["autoencoder_steps"] == 3
    assert first["loop_step_ratio"] > 0 and first["step_ratio"] > 0
    for name in ("pixel", "latent"):
        assert 0 <= first[name]["scores"]["1"]["fid_min"]
        assert (keep / f"grid-{name}-g1.png").is_file()
    assert "| pixel 32x32, guidance 1 | 2 |" in (tmp_path / "latent.md").read_text()

    latent.main([*TINY, "--steps", "2,3,4", "--train", "latent", "--keep", str(keep),
                 "--json", str(out)])
    again = json.loads(out.read_text())
    assert again["latent"]["steps"] == 4  # trained again
    assert again["pixel"]["seconds"] == first["pixel"]["seconds"]  # kept as it was
    assert json.loads((keep / "training.json").read_text())["latent"]["steps"] == 4
    assert "latent      4 steps" in capsys.readouterr().out


def test_a_bad_train_list_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        latent.main([*TINY, "--train", "pxel", "--keep", str(tmp_path)])
    assert exit.value.code == 2
    assert "no pipeline called pxel; pass pixel, latent or both" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds no pixel run to keep; train both first"):
        latent.main([*TINY, "--train", "latent", "--keep", str(tmp_path)])
