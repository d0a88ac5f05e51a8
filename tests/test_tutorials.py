"""Every tutorial runs, top to bottom, at small sizes; and tutorials and code point at each other."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
CITED = re.compile(r"`((?:minidiff|reference|kernels|tests|benchmarks)/[\w/]+\.py)`")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs(chapter, tmp_path):
    env = {**os.environ, "MINIDIFF_TUTORIAL_SMALL": "1", "MINIDIFF_TUTORIAL_OUT": str(tmp_path)}
    result = subprocess.run([sys.executable, chapter.name], cwd=chapter.parent, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{chapter.name} failed:\n{result.stderr[-3000:]}"
    assert any(tmp_path.iterdir()), f"{chapter.name} saved no pictures"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_code_that_links_back(chapter):
    text = chapter.read_text()
    assert "**You will learn**" in text.split("\n# %%\n")[0], "open with what the reader will learn"
    cited = set(CITED.findall(text))
    assert cited, f"{chapter.name} names no file of minidiff"
    for path in cited:
        assert (ROOT / path).exists(), f"{chapter.name} cites {path}, which does not exist"
    back = [p for p in cited if chapter.name in (ROOT / p).read_text()]
    assert back, f"no file {chapter.name} explains mentions it back: add it to one docstring"
