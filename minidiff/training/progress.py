"""The trainer's progress bar: steps done, loss, steps/s and time left (rich, on stderr).

The rate is the session's real average (steps done since the run started or resumed, over the
wall-clock time, previews and checkpoints included), and the time left follows from it; rich's
own estimate, from the last few updates, read 13 steps/s on a busy machine that averaged 2.5.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    """A one-line bar, or nothing when `enabled` is False (tests, ranks other than 0)."""

    def __init__(self, enabled: bool, total: int | None, start: int = 0):
        self.enabled, self.total = enabled, total
        if not enabled:
            return
        self.bar = RichProgress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=Console(stderr=True), refresh_per_second=4)
        self.task = self.bar.add_task("train", total=total, completed=start, loss="-",
                                      rate="- steps/s", eta="-:--:--")

    def __enter__(self):
        if self.enabled:
            self.bar.start()
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

    def print(self, message: str) -> None:
        """A line above the bar (or plain, without one)."""
        if self.enabled:
            self.bar.console.print(message, highlight=False, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)


def clock(seconds: float) -> str:
    """H:MM:SS."""
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"
