"""Every chapter at its full, learner-facing size, as the executed notebook a learner gets: does
each one run and hold its own asserted lesson, and how long does it take?

    python benchmarks/chapters.py --out /tmp/chapters              # all nine, in order
    python benchmarks/chapters.py --out /tmp/chapters --chapters 2,6

The suite runs the chapters at tiny sizes (tests/test_tutorials.py); this runs them as
`python -m minidiff tutorials --notebooks OUT --chapters N` does without `--small`, one chapter
at a time in one OUT (so chapter 2 trains the run that 4, 5 and 6 then reuse, as for a reader),
and prints a Markdown row per chapter: seconds, the load average before and after (a busy
machine stretches the seconds, not the lessons), and the chapter's error line if it stopped.
The notebooks, with every number they printed, stay in OUT. Paste the table into
benchmarks/RESULTS.md with the machine, the command and the date.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CHAPTERS = sorted(p.name[:2] for p in (Path(__file__).resolve().parents[1] / "tutorials")
                  .glob("[0-9][0-9]_*.py"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the notebooks and pictures")
    parser.add_argument("--chapters", default=",".join(str(int(c)) for c in CHAPTERS))
    parser.add_argument("--small", action="store_true", help="tiny sizes: proves the script runs")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "MINIDIFF_TUTORIAL_SMALL"}
    print(f"full size{' (no: --small)' if args.small else ''}, {os.cpu_count()} cores")
    print("| chapter | seconds | load average before, after | lesson |")
    print("|---|---|---|---|")
    failed = 0
    for chapter in args.chapters.split(","):
        before, start = os.getloadavg()[0], time.perf_counter()
        command = [sys.executable, "-m", "minidiff", "tutorials", "--notebooks", args.out,
                   "--chapters", chapter] + (["--small"] if args.small else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds, after = time.perf_counter() - start, os.getloadavg()[0]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        verdict = "held" if done.returncode == 0 else f"FAILED: {lines[-1] if lines else '?'}"
        failed += done.returncode != 0
        print(f"| {int(chapter)} | {seconds:.0f} | {before:.2f}, {after:.2f} | {verdict} |",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
