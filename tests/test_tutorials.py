"""Every tutorial runs, top to bottom, at small sizes, and checks its own lesson; every picture it
saves is announced; and tutorials and code point at each other, both ways.

The chapters run in order in one shared OUT folder, as a reader runs them: chapter 2 trains the
small run that chapters 4, 5 and 6 then reuse, and the feature classifier is trained once.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
CITED = re.compile(r"`((?:minidiff|reference|kernels|tests|benchmarks)/[\w/]+\.py)`")
NAMES_A_CHAPTER = re.compile(r"^Tutorials?: (.*)$", re.MULTILINE)  # a module's pointer line
CHAPTER = re.compile(r"tutorials/(\d\d_\w+\.py)")
PICTURES = (".png", ".gif")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tutorials")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_and_checks_its_lesson(chapter, out):
    env = {**os.environ, "MINIDIFF_TUTORIAL_SMALL": "1", "MINIDIFF_TUTORIAL_OUT": str(out)}
    result = subprocess.run([sys.executable, chapter.name], cwd=chapter.parent, env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"{chapter.name} failed:\n{result.stderr[-3000:]}"
    pictures = [p for p in out.iterdir() if p.name.startswith(chapter.name[:3])
                and p.suffix in PICTURES]
    assert pictures, f"{chapter.name} saved no pictures"
    silent = [p.name for p in pictures if p.name not in result.stdout]
    assert not silent, f"{chapter.name} saves {silent} without saying so"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_code_that_links_back(chapter):
    text = chapter.read_text()
    assert "**You will learn**" in text.split("\n# %%\n")[0], "open with what the reader will learn"
    assert "**Code this chapter explains:**" in text, "name the files the chapter explains"
    cited = set(CITED.findall(text))
    assert cited, f"{chapter.name} names no file of minidiff"
    for path in cited:
        assert (ROOT / path).exists(), f"{chapter.name} cites {path}, which does not exist"
    back = [p for p in cited if chapter.name in (ROOT / p).read_text()]
    assert back, f"no file {chapter.name} explains mentions it back: add it to one docstring"


SOURCES = sorted(p for folder in ("minidiff", "reference", "kernels")
                 for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_pointing_at_a_chapter_is_cited_by_it(source):
    """A module's `Tutorial: tutorials/NN_x.py` line is a promise that the chapter explains it."""
    path = source.relative_to(ROOT).as_posix()
    for line in NAMES_A_CHAPTER.findall(source.read_text()):
        for name in CHAPTER.findall(line):
            chapter = ROOT / "tutorials" / name
            assert chapter.is_file(), f"{path} points at tutorials/{name}, which does not exist"
            assert f"`{path}`" in chapter.read_text(), (
                f"{path} says tutorials/{name} explains it, but the chapter never names "
                f"`{path}`: cite it on the chapter's 'Code this chapter explains' line")
