"""How far a run has come: the trainer's progress bar, and the --minutes budget it spends.

The bar shows steps, loss, the session's real average rate (steps since the run started or
resumed, over the wall-clock time, previews and checkpoints included) and the time left; rich's
own estimate, from the last few updates, read 13 steps/s on a busy machine that averaged 2.5. Off a
terminal (a log file, a notebook's captured output) it prints one plain line instead, at most every
`PLAIN_EVERY` seconds, so a long run never goes quiet.

`Budget` is the one --minutes policy of both trainers: the step count is fitted to the time left
at the rate of the recent steps, again at every log line and whenever the run reaches it, so a slow
first moment or a machine that slows down mid-run moves the end, not the time spent.
"""

from __future__ import annotations

import collections
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

PLAIN_EVERY = 30.0  # seconds between the plain progress lines printed off a terminal


class Progress:
    """A one-line bar, plain lines off a terminal, or nothing when `enabled` is False (tests,
    ranks other than 0)."""

    def __init__(self, enabled: bool, total: int | None, start: int = 0, clock=time.perf_counter):
        self.enabled, self.total, self.clock = enabled, total, clock
        if not enabled:
            return
        console = Console(stderr=True)
        self.plain, self.last_line = not console.is_terminal, clock()
        self.bar = RichProgress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=console, refresh_per_second=4, disable=self.plain)
        self.task = self.bar.add_task("train", total=total, completed=start, loss="-",
                                      rate="- steps/s", eta="-:--:--")

    def __enter__(self):
        if self.enabled:
            self.bar.start()
            self.last_line = self.clock()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()

    def update(self, step: int, loss: float | None = None, rate: float | None = None,
               total: int | None = None) -> None:
        """Show `step`; `rate` is the average steps/s since the session started."""
        if not self.enabled:
            return
        fields = {}
        if total is not None:
            self.total = fields["total"] = total
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if rate is not None and rate > 0:
            fields["rate"] = f"{rate:.2f} steps/s"
            if self.total is not None:
                fields["eta"] = clock(max(0, self.total - step) / rate)
        self.bar.update(self.task, completed=step, **fields)
        if self.plain and loss is not None and self.clock() - self.last_line >= PLAIN_EVERY:
            task = self.bar.tasks[0].fields
            of = f" of {self.total:,}" if self.total is not None else ""
            self.print(f"step {step:,}{of}: loss {task['loss']}, {task['rate']}, ETA "
                       f"{task['eta']}")
            self.last_line = self.clock()

    def print(self, message: str) -> None:
        """A line above the bar (or plain, without one)."""
        if self.enabled and not self.plain:
            self.bar.console.print(message, highlight=False, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)


def clock(seconds: float) -> str:
    """H:MM:SS."""
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


class Budget:
    """A --minutes budget as the loop spends it (or none: `minutes` None).

    `tick(step)` after every step records when it ended; `fitted_total(step)` is the step count
    that ends the loop at `SHARE` of the budget, less the time the last checkpoint and preview will
    take (`reserve`, the longest one measured so far), at the rate of the last `WINDOW` steps (the
    session's first step, torch's slow warm-up, is never among them); `over()` is the hard stop
    at the whole budget less that reserve.
    """

    SHARE = 0.99  # the loop's planned end, of the budget; the final save and preview follow it
    WINDOW = 100  # steps whose rate predicts the next ones: recent enough to follow a slowdown
    MIN_TIMED = 10  # steps timed before the first fit

    def __init__(self, minutes: float | None, clock=time.perf_counter):
        self.seconds = None if minutes is None else minutes * 60
        self.clock, self.start = clock, clock()
        self.ends = collections.deque(maxlen=self.WINDOW + 1)  # (step, time) after each step
        self.reserve = 0.0 if minutes is None else 0.01 * self.seconds  # until one is measured

    def tick(self, step: int) -> None:
        self.ends.append((step, self.clock()))

    def elapsed(self) -> float:
        return self.clock() - self.start

    def spent(self, seconds: float) -> None:
        """A checkpoint and preview took `seconds`: the end of the run will too."""
        self.reserve = max(self.reserve, seconds)

    def ready(self) -> bool:
        """Enough steps timed to fit the step count (the first is not timed: it is a warm-up)."""
        return self.seconds is not None and len(self.ends) > self.MIN_TIMED

    def fitted_total(self, step: int) -> int:
        (first, began), (last, ended) = self.ends[0], self.ends[-1]
        rate = (last - first) / max(ended - began, 1e-9)
        left = self.SHARE * self.seconds - self.reserve - self.elapsed()
        return step + max(0, int(left * rate))

    def over(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds - self.reserve
