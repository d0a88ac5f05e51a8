"""Does `train` hold its speed beside another busy process? Time it quiet and beside 1 and 2.

    python benchmarks/train_threads.py                        # the default, 1 and 2 threads
    python benchmarks/train_threads.py --setups auto,2,2:PASSIVE,2:spin=2000 --steps 120
    python benchmarks/train_threads.py --tiny                 # seconds: proves it runs

Each setup is `THREADS[:POLICY]`: THREADS is `auto` (no --threads: what `train` chooses itself)
or a count; POLICY is `PASSIVE` (OMP_WAIT_POLICY, threads sleep when idle), `spin=N`
(GOMP_SPINCOUNT=N, spin N times before sleeping) or nothing (the environment as it is). For each
`--busy` level (0, 1, 2: processes spinning on the CPU, as another job on a shared machine), a
fresh `python -m minidiff train` runs --steps steps of the default recipe, and the table gives its
speed in images/s: the median of its metrics lines after the first (start-up and the first
steps, which allocate, left out). The last column is each setup's busy speed over the quiet
speed of the fastest quiet setup: the issue's target is a step at most 2x slower (ratio >= 0.5)
beside one busy process. Each row prints the load average when it started; paste the table into
benchmarks/RESULTS.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def spin() -> None:
    while True:
        pass


def environment(policy: str) -> dict:
    """The child's environment for a POLICY: `PASSIVE`, `spin=N`, or '' (as it is)."""
    env = dict(os.environ)
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = policy.split("=", 1)[1]
    elif policy:
        raise SystemExit(f"unknown policy {policy!r}: PASSIVE, spin=N or nothing")
    return env


def measure(setup: str, args) -> tuple[float, float]:
    """(median images/s after the first metrics line, wall seconds) of one fresh `train`."""
    threads, _, policy = setup.partition(":")
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "minidiff", "train", "--out", f"{out}/run",
                "--steps", str(args.steps), "--log-every", str(args.log_every),
                "--sample-every", "0", "--checkpoint-every", "0", "--no-progress", *args.extra]
        if threads != "auto":
            argv += ["--threads", threads]
        start = time.perf_counter()
        subprocess.run(argv, env=environment(policy), capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        lines = [json.loads(line) for line in Path(f"{out}/run/metrics.jsonl").read_text()
                 .splitlines()]
    rates = [line["images_per_s"] for line in lines[1:]] or [lines[0]["images_per_s"]]
    return statistics.median(rates), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="auto,1,2", help="THREADS[:POLICY],... (see above)")
    parser.add_argument("--busy", default="0,1,2", help="spinning processes, one table row each")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="a 4-step toy network, 2 lines")
    args = parser.parse_args()
    args.extra = []
    if args.tiny:
        args.steps, args.log_every = 4, 2
        args.extra = ["--n-feat", "8", "--n-images", "64", "--batch-size", "16"]
    setups, levels = args.setups.split(","), [int(b) for b in args.busy.split(",")]
    print(f"{os.cpu_count()} cores, {args.steps} steps of `train` (default recipe"
          f"{', tiny' if args.tiny else ''}), images/s: median of the metrics lines after the "
          "first")
    print("| setup | busy processes | load average at start | images/s | wall s | "
          "busy / best quiet |")
    print("|---|---|---|---|---|---|")
    best_quiet = None
    for busy in levels:
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for process in spinners:
            process.start()
        try:
            time.sleep(2 if spinners else 0)
            rates = {}
            for setup in setups:
                load = os.getloadavg()[0]
                rates[setup], wall = measure(setup, args)
                ratio = "" if best_quiet is None else f"{rates[setup] / best_quiet:.2f}"
                print(f"| {setup} | {busy} | {load:.2f} | {rates[setup]:.0f} | {wall:.1f} | "
                      f"{ratio} |", flush=True)
            if busy == 0:
                best_quiet = max(rates.values())
        finally:
            for process in spinners:
                process.terminate()


if __name__ == "__main__":
    main()
