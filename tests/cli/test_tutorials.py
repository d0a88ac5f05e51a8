"""`python -m minidiff tutorials --notebooks DIR`: a chapter becomes an executed notebook."""

import json
import os
import subprocess
import sys

import pytest

from minidiff.cli import tutorials


def test_chapter_one_runs_as_a_notebook(tmp_path):
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "minidiff", "tutorials", "--notebooks",
                             str(tmp_path), "--chapters", "1", "--small"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    notebook = json.loads((tmp_path / "01_noising.ipynb").read_text())
    kinds = {cell["cell_type"] for cell in notebook["cells"]}
    assert kinds == {"markdown", "code"}, "the # %% [markdown] cells should become Markdown"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] for cell in code), "every code cell ran"
    outputs = [out for cell in code for out in cell["outputs"]]
    assert not [out for out in outputs if out["output_type"] == "error"]
    assert any("saved" in "".join(out.get("text", "")) for out in outputs)
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 4, "the pictures a cell saves are shown below it"
    assert (tmp_path / "out" / "01_variance.png").is_file(), "pictures land in DIR/out"
    assert (tmp_path / "_tutorial.py").is_file(), "the helpers sit beside the notebooks"


def test_unknown_chapter_is_one_line(capsys):
    from minidiff.cli import main

    assert main(["tutorials", "--notebooks", "unused", "--chapters", "1,42"]) == 2
    assert "'42' is not a chapter" in capsys.readouterr().err


def test_every_chapter_is_found():
    numbers = [int(p.name[:2]) for p in tutorials.select_chapters(None)]
    assert numbers == sorted(numbers) and numbers[0] == 1 and len(numbers) >= 8
