"""How many CPU threads should `sample` and `eval` use? Time them quiet and on a busy machine.

    python benchmarks/sample_threads.py --run runs/NAME                  # quiet machine
    python benchmarks/sample_threads.py --run runs/NAME --busy 2         # 2 spinning processes
    python benchmarks/sample_threads.py --run runs/NAME --tiny           # seconds: proves it runs

For each thread count (1, 2, ..., all cores) and each OpenMP wait policy (torch's default, which
spins, and PASSIVE, which sleeps), a fresh process times `Pipeline.sample` (DDIM-25, --n sprites,
best and median of --repeats, after one warm-up call). `--busy K` first starts K processes that
spin on the CPU for the whole run, as another job on a shared machine would. The table is
Markdown; paste it into benchmarks/RESULTS.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, torch, minidiff
run = sys.argv[1]
threads, n, steps, repeats = (int(a) for a in sys.argv[2:6])
torch.set_num_threads(threads)
pipe = minidiff.load(run if run != "-" else None, device="cpu")
pipe.sample(min(n, 4), steps=steps)  # warm-up: first calls allocate and pick kernels
times = []
for _ in range(repeats):
    start = time.perf_counter()
    pipe.sample(n, steps=steps)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def spin() -> None:
    while True:
        pass


def measure(run: str, threads: int, policy: str | None, args) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, run, str(threads), str(args.n),
                          str(args.steps), str(args.repeats)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="-", help="run folder (default: the newest)")
    parser.add_argument("--n", type=int, default=32, help="sprites per call (sample's default 40)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to start first")
    parser.add_argument("--tiny", action="store_true", help="n 2, steps 2, 1 repeat, threads 1")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts = sorted({1, 2, cores} & set(range(1, cores + 1)))
    if args.tiny:
        args.n, args.steps, args.repeats, counts = 2, 2, 1, [1]
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for process in spinners:
        process.start()
    time.sleep(1 if spinners else 0)
    print(f"{cores} cores, {args.busy} busy processes, DDIM-{args.steps}, {args.n} sprites, "
          f"best and median of {args.repeats}")
    print("| threads | OMP_WAIT_POLICY | best s | median s |")
    print("|---|---|---|---|")
    try:
        for threads in counts:
            for policy in (None, "PASSIVE"):
                times = measure(args.run, threads, policy, args)
                print(f"| {threads} | {policy or 'default'} | {min(times):.3f} | "
                      f"{statistics.median(times):.3f} |", flush=True)
    finally:
        for process in spinners:
            process.terminate()


if __name__ == "__main__":
    main()
