"""`python -m minidiff tutorials`: the chapters as executed Jupyter notebooks.

    python -m minidiff tutorials --notebooks notebooks/              # every chapter, full size
    python -m minidiff tutorials --notebooks notebooks/ --chapters 1,3 --small

The chapters are literate `# %%` files in the repository's `tutorials/` folder. jupytext reads
them as notebooks (a `# %% [markdown]` cell becomes a Markdown cell) and nbclient runs each one in
a fresh IPython kernel, so DIR ends up with `01_noising.ipynb` ... with every output and picture in
place, ready to open in Jupyter, VS Code or Colab. The chapters' helper modules (`_tutorial.py`,
`_trained.py`, `_plot.py`) are copied beside them, so the notebooks run again from DIR; pictures
land in DIR/out. Chapters 2, 5 and 6 reuse chapter 4's run when it is in DIR/out (run them in
order), or train it themselves.

Needs the notebook extra: `pip install -e ".[notebooks]"` (jupytext, nbclient, ipykernel; pytest
and Hypothesis for chapter 7's property test).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from minidiff.cli import flags
from minidiff.utils.errors import MinidiffError

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"  # beside the package in a clone
HELPERS = ("_tutorial.py", "_trained.py", "_plot.py")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
SAVED = re.compile(r"(/\S+?\.png)\b")  # the absolute paths a chapter prints as it saves pictures
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the colours of IPython's tracebacks


def add_arguments(parser) -> None:
    parser.add_argument("--notebooks", required=True, metavar="DIR",
                        help="folder to write the executed .ipynb files into (made if missing)")
    parser.add_argument("--chapters", metavar="N,N", default=None,
                        help="chapter numbers to convert, e.g. 1,3 (default: all of them)")
    parser.add_argument("--small", action="store_true",
                        help="run at the tiny sizes CI uses (as MINIDIFF_TUTORIAL_SMALL=1 does): "
                             "seconds per chapter, numbers that say little")
    parser.add_argument("--timeout", type=flags.integer(low=1), default=3600,
                        help="seconds one cell may run before the chapter is stopped")


def main(args) -> int:
    chapters = select_chapters(args.chapters)
    jupytext, NotebookClient, CellExecutionError = _notebook_libraries()
    out = Path(args.notebooks)
    out.mkdir(parents=True, exist_ok=True)
    for helper in HELPERS:
        shutil.copyfile(TUTORIALS / helper, out / helper)
    os.environ["MINIDIFF_TUTORIAL_OUT"] = str((out / "out").resolve())  # the kernels inherit it
    if args.small:  # else the environment decides, as for `python tutorials/01_noising.py`
        os.environ["MINIDIFF_TUTORIAL_SMALL"] = "1"
    with tempfile.TemporaryDirectory(prefix="minidiff-kernels-") as sockets:
        for chapter in chapters:
            notebook = jupytext.read(chapter)
            notebook.metadata["kernelspec"] = KERNELSPEC
            start = time.perf_counter()
            km = kernel_manager(Path(sockets))
            client = NotebookClient(notebook, km=km, timeout=args.timeout,
                                    resources={"metadata": {"path": str(out)}})
            path = out / f"{chapter.stem}.ipynb"
            try:
                client.execute()
            except CellExecutionError as error:
                lines = [line for line in ANSI.sub("", str(error)).splitlines() if line.strip()]
                raise MinidiffError(f"{chapter.name} stopped in a cell: {lines[-1]} (the notebook, "
                                    f"with the traceback in that cell, is {path})") from None
            finally:  # a failed chapter is still written, with the error in its cell
                if km.has_kernel:
                    km.shutdown_kernel()
                show_pictures(notebook)
                jupytext.write(notebook, path, fmt="ipynb")
            print(f"{path}: {len(notebook.cells)} cells run in {time.perf_counter() - start:.0f} s")
    print(f"pictures in {out / 'out'}; open the notebooks with `jupyter lab {out}`")
    return 0


def kernel_manager(sockets: Path):
    """A Python kernel for one chapter. Over IPC (local socket files) where the system has them:
    nothing listens on a TCP port, and ipykernel has no "running over TCP without encryption"
    warning to print beside every chapter."""
    from jupyter_client.manager import KernelManager  # installed with nbclient

    if os.name != "posix":
        return KernelManager(kernel_name=KERNELSPEC["name"])
    return KernelManager(kernel_name=KERNELSPEC["name"], transport="ipc", ip=str(sockets / "k"))


def show_pictures(notebook) -> None:
    """Below each cell that printed "saved X.png", the picture itself, embedded in the notebook."""
    from nbformat.v4 import new_output  # installed with jupytext

    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        printed = "".join(out.get("text", "") for out in cell.outputs
                          if out.output_type == "stream")
        for name in dict.fromkeys(SAVED.findall(printed)):  # in order, once each
            if Path(name).is_file():
                png = base64.b64encode(Path(name).read_bytes()).decode("ascii")
                cell.outputs.append(new_output("display_data",
                                               data={"image/png": png, "text/plain": name}))


def select_chapters(numbers: str | None) -> list[Path]:
    """The chapter files asked for ("1,3"), in order; all of them when None."""
    if not TUTORIALS.is_dir():
        raise MinidiffError(f"no tutorials folder at {TUTORIALS}: the chapters ship with the "
                            "repository; run this from a clone installed with `pip install -e .`")
    chapters = {int(p.name[:2]): p for p in sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))}
    if numbers is None:
        return list(chapters.values())
    wanted = []
    for item in numbers.split(","):
        if not item.strip().isdigit() or int(item) not in chapters:
            raise MinidiffError(f"--chapters {numbers!r}: {item.strip()!r} is not a chapter; "
                                f"the chapters are {', '.join(map(str, chapters))}")
        wanted.append(chapters[int(item)])
    return wanted


def _notebook_libraries():
    """jupytext, nbclient's client and error, or the one line that says how to install them."""
    try:
        import jupytext
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as error:
        raise MinidiffError(f"the notebooks need {error.name}: pip install -e \".[notebooks]\" "
                            "(jupytext, nbclient, ipykernel)") from None
    return jupytext, NotebookClient, CellExecutionError
