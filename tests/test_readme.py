"""Every shell and Python block of README.md runs as written on a fresh clone, at small sizes.

The blocks run in order in one empty folder (as a fresh clone would be, with `tutorials/` linked
in), each shell line as its own command, each Python block as its own process. Two kinds of line
are not run: the quick start's installs are checked against `.ci/run`, which runs them for real;
the other `pip install` lines are checked against pyproject.toml's extras. Lines that train or
measure for minutes run with the smaller sizes of SMALL, whose every entry must still match a
README line (so the table cannot rot). A line that starts a server (SERVERS) runs as written, in
the background: the test waits for the URL it prints, fetches the page, then stops it; without
the extra it needs, the line must say in one line what to install (exit 2). Nothing else is
substituted: no placeholders.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(bash|python)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)
TINY = "--steps 4 --n-images 256"  # seconds, not minutes: fewer steps on fewer built-in sprites
SMALL = {  # README command (comment dropped) -> what the test runs instead
    "python -m minidiff train --out runs/sprites": f"python -m minidiff train --out runs/sprites "
                                                   f"{TINY}",
    "python -m minidiff eval --n 1000": "python -m minidiff eval --n 40 --classifier-steps 10",
    "python -m minidiff train --out runs/sprites --resume --steps 5000":
        "python -m minidiff train --out runs/sprites --resume --steps 8",
    "python -m minidiff train --data course_layout/sprites_16x16.npy --labels "
    "course_layout/sprites_labels_16x16.npy --out runs/from-npy":
        "python -m minidiff train --data course_layout/sprites_16x16.npy --labels "
        f"course_layout/sprites_labels_16x16.npy --out runs/from-npy {TINY}",
    "python -m minidiff train --preset course --out runs/course":
        f"python -m minidiff train --preset course --out runs/course {TINY}",
    "torchrun --nproc_per_node=2 -m minidiff train --out runs/ddp":
        f"torchrun --nproc_per_node=2 -m minidiff train --out runs/ddp {TINY}",
    "python -m minidiff train-autoencoder --out runs/ae":
        f"python -m minidiff train-autoencoder --out runs/ae {TINY}",
    "python -m minidiff train --autoencoder runs/ae --out runs/latent":
        f"python -m minidiff train --autoencoder runs/ae --out runs/latent {TINY}",
    "python tutorials/01_noising.py": "python tutorials/01_noising.py",  # small: see ENV
    # every chapter runs as a notebook in tests/test_tutorials.py; here the first
    "python -m minidiff tutorials --notebooks notebooks/":
        "python -m minidiff tutorials --notebooks notebooks/ --chapters 1",
}
# What SMALL may change: only how much is done (steps, images, chapters), never what
SIZES = {"--steps", "--n-images", "--n", "--classifier-steps", "--chapters"}
# README command -> the line it prints once it serves, the module it needs, and that one's extra
SERVERS = {"python -m minidiff lab": ("lab on ", "gradio", "lab")}
# What the README's Python block returns, as it documents: float32 in [-1, 1], uint8 pixels
PYTHON_CHECKS = """
import torch
assert images.dtype == torch.float32 and images.shape == (16, 3, 16, 16), images.shape
assert images.min() >= -1 and images.max() <= 1, "pipe.sample() is documented as in [-1, 1]"
assert pixels.dtype == torch.uint8 and pixels.shape == (8, 16, 16, 3), pixels.shape
"""


def command_of(line: str) -> str:
    """The command on a README line: comment dropped, spaces squeezed."""
    words = shlex.split(line, comments=True)
    return " ".join(shlex.quote(w) if " " in w else w for w in words)


def quick_start() -> list[str]:
    (block,) = [code for kind, code in BLOCKS if kind == "bash" and "pip install" in code
                and "-e ." in code and "minidiff train" in code]
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    first, second = quick_start()
    assert second in ci, "the README's test command and .ci/run's must be the same line"
    install, train = first.split(" && ")
    assert second.startswith(install.replace("-e .", '-e ".[test]"')), "same torch pin, same -e"
    assert train == "python -m minidiff train"


def test_install_lines_name_real_extras():
    pyproject = (ROOT / "pyproject.toml").read_text()
    table = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^(\w+) = \[", table, flags=re.MULTILINE))
    for kind, code in BLOCKS:
        for line in code.splitlines():
            for extra in re.findall(r'-e "\.\[(\w+)\]"', line):
                assert extra in extras, f"README installs .[{extra}], pyproject has no such extra"


def test_small_table_matches_the_readme():
    commands = {command_of(line) for kind, code in BLOCKS if kind == "bash"
                for line in code.splitlines() if line.strip()}
    stale = (set(SMALL) | set(SERVERS)) - commands
    assert not stale, f"SMALL or SERVERS name lines the README no longer has: {stale}"


def flags_of(command: str) -> tuple[list[str], dict[str, str]]:
    """(the words before the first flag, {flag: value or ''})."""
    words = shlex.split(command)
    first = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    flags, i = {}, first
    while i < len(words):
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
        flags[words[i]] = value
        i += 2 if value else 1
    return words[:first], flags


def test_small_commands_only_do_less():
    """A SMALL line is its README line with fewer steps, images or chapters: every other word as
    written, so the suite runs each command's real arguments."""
    for line, small in SMALL.items():
        (head, flags), (small_head, small_flags) = flags_of(line), flags_of(small)
        assert small_head == head, small
        changed = {f for f in flags.keys() | small_flags.keys()
                   if flags.get(f) != small_flags.get(f)}
        assert changed <= SIZES, f"{small!r} changes {changed - SIZES}, not only sizes"
        for flag in changed & flags.keys() & small_flags.keys():
            if flag != "--chapters":
                assert int(small_flags[flag]) < int(flags[flag]), f"{small!r} does more"


def test_resume_example_continues_past_where_the_quick_start_stops():
    """The README's resume line is run small (8 steps after 4); at its real sizes too it must
    continue the quick start's run, which stops at the default step count."""
    from minidiff.training import TrainConfig

    (line,) = [line for line in SMALL if "--resume" in line]
    steps, default = int(flags_of(line)[1]["--steps"]), TrainConfig().steps
    assert steps > default, (f"the README resumes runs/sprites to {steps} steps, but the quick "
                             f"start already trains {default}")
    assert f"continue it to {steps:,} steps" in README
    assert int(flags_of(SMALL[line])[1]["--steps"]) > int(flags_of(TINY)[1]["--steps"])


def test_every_block_runs(tmp_path):
    (tmp_path / "tutorials").symlink_to(ROOT / "tutorials")  # a clone has it beside runs/
    env = {**os.environ, "HOME": str(tmp_path / "home"), "MINIDIFF_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "MINIDIFF_TUTORIAL_SMALL": "1",
           "MINIDIFF_TUTORIAL_OUT": str(tmp_path / "chapters"), "PYTHONPATH": ""}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    skipped = set(quick_start())
    for kind, code in BLOCKS:
        if kind == "python":
            run(tmp_path, env, [sys.executable, "-c", code + PYTHON_CHECKS], code)
            continue
        for line in code.splitlines():
            if not line.strip() or line in skipped or "pip install" in line:
                continue
            if command_of(line) in SERVERS:
                serve(tmp_path, env, command_of(line))
                continue
            command = SMALL.get(command_of(line), line)
            run(tmp_path, env, ["bash", "-c", command], line)
    assert list((tmp_path / "runs" / "sprites" / "samples").glob("*.png")), "sample wrote no PNG"


def run(cwd: Path, env: dict, argv: list[str], shown: str) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"README line failed (exit {result.returncode}):\n  {shown}\n"
                    f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}")


def serve(cwd: Path, env: dict, command: str, timeout: float = 120) -> None:
    """Start a server line, fetch the URL it prints, stop it."""
    ready, module, extra = SERVERS[command]
    if importlib.util.find_spec(module) is None:
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 2 and f'pip install -e ".[{extra}]"' in result.stderr, \
            f"{command} without {module}: {result.stderr[-500:]}"
        return
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, line = time.monotonic() + timeout, ""
        while ready not in line:
            line = server.stdout.readline()
            if not line and server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"README line did not serve: {command} (exit {server.poll()})")
        url = re.search(r"http://\S+", line)[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"minidiff lab" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
