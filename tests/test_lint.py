"""The tree passes ruff (pyflakes, pycodestyle, and import order: the `I` rules), as configured in
pyproject.toml. Skipped with the reason where ruff is not installed (it is in the `test` extra)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install ruff)")
def test_the_tree_passes_ruff():
    result = subprocess.run(["ruff", "check", "--output-format", "concise", "--no-cache",
                             "--exclude", ".venv", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
