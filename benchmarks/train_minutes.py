# %% [markdown]
# # Does `train --minutes M` spend its budget? (issue 23)
#
# Runs `python -m minidiff train --minutes M` `--runs` times on the built-in sprites, each in a
# fresh run folder, quiet or beside `--busy K` processes that each spin one core, and reads the
# seconds of training from the run's own closing line ("trained N steps in S s"). The target:
# every run trains between 95% and 100% of the budget (285-300 s for `--minutes 5`).
#
#     python benchmarks/train_minutes.py --minutes 5 --runs 10 --busy 0,1
#
# Prints one line per run with the load average at its start, then the share of runs in range.

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOW_SHARE = 0.95  # of the budget: the least a run may train
TRAINED = re.compile(r"trained ([\d,]+) steps in ([\d.]+) s")


def spin(stop_at: float) -> None:
    """Hold one core until `stop_at` (perf_counter): the busy process beside the run."""
    while time.perf_counter() < stop_at:
        pass


def one_run(minutes: float, out: Path, extra: list[str]) -> tuple[int, float, float]:
    """(steps, training seconds, wall seconds) of one `train --minutes` in `out`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minidiff", "train", "--minutes", str(minutes),
                           "--out", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = TRAINED.findall(done.stdout + done.stderr)
    if done.returncode or not found:
        raise SystemExit(f"train failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    steps, seconds = found[-1]
    return int(steps.replace(",", "")), float(seconds), wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=10, help="runs per --busy setting")
    parser.add_argument("--busy", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                        help="spinning processes beside the run, comma separated (default 0)")
    parser.add_argument("--train-args", default="", help="more `train` flags, one string")
    args = parser.parse_args(argv)
    budget = 60 * args.minutes
    within = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for busy in args.busy:
            for k in range(args.runs):
                stop_at = time.perf_counter() + budget * 2  # outlives the run; killed after it
                spinners = [multiprocessing.Process(target=spin, args=(stop_at,), daemon=True)
                            for _ in range(busy)]
                for p in spinners:
                    p.start()
                load = os.getloadavg()[0]
                try:
                    steps, seconds, wall = one_run(args.minutes, Path(tmp) / f"b{busy}-{k}",
                                                   args.train_args.split())
                finally:
                    for p in spinners:
                        p.kill()
                ok = LOW_SHARE * budget <= seconds <= budget
                within, total = within + ok, total + 1
                print(f"busy {busy} run {k}: {steps:>6,} steps, trained {seconds:6.1f} s of "
                      f"{budget:.0f} ({seconds / budget:.1%}), {wall:6.1f} s wall, load "
                      f"{load:.2f} at the start  {'ok' if ok else 'OUT OF RANGE'}", flush=True)
    print(f"{within} of {total} runs trained {LOW_SHARE:.0%}-100% of --minutes {args.minutes:g}")


if __name__ == "__main__":
    main()
