"""benchmarks/lab.py at toy sizes: every row and target line prints, in the page too where
Chromium and Gradio are here. Its numbers mean nothing (a tiny run, a busy machine)."""

import importlib.util
import os
from pathlib import Path

import pytest

from minidiff.training import train

from tiny_runs import tiny

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lab_benchmark", REPO / "benchmarks" / "lab.py")
lab_benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_benchmark)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PAGE = (os.path.exists(lab_benchmark.CHROMIUM) and importlib.util.find_spec("gradio") is not None
        and importlib.util.find_spec("playwright") is not None)


@pytest.mark.parametrize("page", [False, pytest.param(True, marks=pytest.mark.skipif(
    not PAGE, reason="the page rows need Gradio, Playwright and /usr/bin/chromium"))])
def test_rows_and_targets_print(tmp_path, capsys, page):
    run = tmp_path / "runs" / "tiny"
    train(tiny(run))
    argv = ["--run", str(run), "--n", "4", "--steps", "3", "--repeats", "2"]
    assert lab_benchmark.main(argv + ([] if page else ["--no-page"])) == 0
    out = capsys.readouterr().out
    wheres = ["lab", "page"] if page else ["lab"]
    for where in wheres:
        for target, limit in (("control", "1 s"), ("scrub", "0.2 s")):
            line = next(li for li in out.splitlines() if li.startswith(f"{where} {target}:"))
            assert f"against {limit}: ratio" in line and "load average" in line
    assert out.count("median") == 4 * len(wheres)
