"""How many CPU threads a training run takes when the user does not say: the cores that no other
process is running on when it starts.

torch's threads spin while they wait for each other, so one of them sharing a core with another
busy process stalls them all: beside one busy process on 2 cores, 2 threads trained 5x slower
than alone and 1 thread 1.6x (benchmarks/RESULTS.md, "Threads for `train`"). The count is chosen
once, at the start, and saved with the run, because it decides how float sums round: `--resume`
continues with the same count, bit for bit, and `--threads N` makes it the same on every machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
PROC_STAT = Path("/proc/stat")


def busy_cores(samples: int = 5, interval: float = 0.02) -> int:
    """The cores other processes are running on right now: the kernel's count of runnable threads
    (`procs_running` in /proc/stat, which counts the thread reading it) minus this one, the least
    of a few readings so that a moment's blip is not a busy core; 0 where there is no /proc."""
    seen = []
    for i in range(samples):
        try:
            stat = PROC_STAT.read_text()
        except OSError:
            return 0
        running = [line.split()[1] for line in stat.splitlines()
                   if line.startswith("procs_running ")]
        if not running:
            return 0
        seen.append(int(running[0]) - 1)
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, min(seen))


def training_threads(busy: int | None = None) -> int:
    """Every core when the machine is quiet, else the cores left free (at least 1)."""
    busy = busy_cores() if busy is None else busy
    return max(1, CORES - busy)
