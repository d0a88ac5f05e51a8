"""benchmarks/train_minutes.py at a toy budget: it runs `train --minutes`, reads the seconds
trained from the run's closing line, and says whether they fall in the budget's range."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("train_minutes",
                                              REPO / "benchmarks" / "train_minutes.py")
train_minutes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_minutes)

TOY = "--n-images 64 --n-feat 8 --batch-size 8 --sample-every 0 --threads 1"


def test_the_closing_line_is_read():
    line = "trained 2,500 steps in 123.4 s (2600 images/s); run folder runs/sprites"
    assert train_minutes.TRAINED.findall(line) == [("2,500", "123.4")]


def test_a_toy_budget_is_run_and_judged(capsys):
    train_minutes.main(["--minutes", "0.1", "--runs", "1", "--busy", "0", "--train-args", TOY])
    out = capsys.readouterr().out
    assert "busy 0 run 0:" in out and "of 6 (" in out
    assert out.strip().splitlines()[-1].endswith("runs trained 95%-100% of --minutes 0.1")
