"""Every tutorial runs, top to bottom, at small sizes, as the executed notebook a learner gets
from `python -m minidiff tutorials --notebooks DIR`, and checks its own lesson; every picture it
saves is announced; every module a chapter needs comes with the `[notebooks]` extra; and tutorials
and code point at each other, both ways.

The chapters run in order in one shared DIR, as a reader runs them: chapter 2 trains the small run
that chapters 4, 5 and 6 then reuse, and the feature classifier is trained once. (Chapters 1 and
3 also run as plain scripts, in tests/test_readme.py, which runs the README's lines.)
"""

import ast
import json
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
# the import name of each distribution the package and its extras name
IMPORT_NAMES = {"pillow": "PIL", "jupytext": "jupytext", "nbclient": "nbclient",
                "ipykernel": "ipykernel", "pytest": "pytest", "hypothesis": "hypothesis",
                "numpy": "numpy", "torch": "torch", "triton": "triton", "einops": "einops",
                "rich": "rich"}


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_as_a_notebook_and_checks_its_lesson(chapter, notebooks):
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-m", "minidiff", "tutorials", "--notebooks",
                             str(notebooks), "--chapters", str(int(chapter.name[:2])), "--small"],
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"{chapter.name} failed:\n{result.stderr[-3000:]}"
    assert "\x1b[" not in result.stdout + result.stderr, "colour codes reached a log"
    assert "without encryption" not in result.stderr, "the kernel's TCP warning reached the learner"
    cells = json.loads((notebooks / f"{chapter.stem}.ipynb").read_text())["cells"]
    printed = "".join("".join(out.get("text", "")) for cell in cells
                      for out in cell.get("outputs", []) if out["output_type"] == "stream")
    pictures = [p for p in (notebooks / "out").iterdir() if p.name.startswith(chapter.name[:3])
                and p.suffix in PICTURES]
    assert pictures, f"{chapter.name} saved no pictures"
    silent = [p.name for p in pictures if p.name not in printed]
    assert not silent, f"{chapter.name} saves {silent} without saying so"


def imported_modules(path: Path) -> set[str]:
    """The top-level modules a file imports, and those it runs with `python -m X`."""
    tree = ast.parse(path.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    names |= {b for a, b in zip(strings, strings[1:]) if a == "-m"}
    return names


def test_every_module_a_chapter_needs_comes_with_the_notebooks_extra():
    """A learner installs `.[notebooks]` only: what the chapters import (and the property tests
    chapter 7 runs) must be the standard library, minidiff, the chapters' helpers, or a package
    of the base dependencies or that extra."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    lists = [re.search(rf"^{key} = \[(.*?)\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
             for key in ("dependencies", "notebooks")]
    wanted = [d for text in lists for d in re.findall(r'"([^"]+)"', text)]
    provided = {IMPORT_NAMES[re.split(r"[<>=!~;\[ ]", d)[0].lower()] for d in wanted}
    helpers = {p.stem for p in (ROOT / "tutorials").glob("_*.py")}
    for chapter in CHAPTERS:
        needed = imported_modules(chapter)
        if "pytest" in needed:  # it runs tests: what the tests it cites import, and conftest's
            tests = [p for p in CITED.findall(chapter.read_text()) if p.startswith("tests/")]
            for path in [*tests, "tests/conftest.py"]:
                needed |= imported_modules(ROOT / path)
        local = {p.stem for p in (ROOT / "tests").glob("*.py")}  # the tests' own helpers
        missing = {m for m in needed - provided - helpers - local - {"minidiff"}
                   if m not in sys.stdlib_module_names}
        assert not missing, f"{chapter.name} needs {missing}, which `.[notebooks]` does not install"


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
