"""The trainer's progress bar: steps done, loss, steps/s and time left (rich, on stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """A one-line bar, or nothing when `enabled` is False (tests, ranks other than 0)."""

    def __init__(self, enabled: bool, total: int | None, start: int = 0):
        self.enabled = enabled
        self.loss = float("nan")
        if not enabled:
            return
        self.bar = RichProgress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} steps/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), refresh_per_second=4)
        self.task = self.bar.add_task("train", total=total, completed=start, loss=self.loss,
                                      rate=0.0)

    def __enter__(self):
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()

    def update(self, step: int, loss: float | None = None, rate: float | None = None,
               total: int | None = None) -> None:
        if not self.enabled:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = loss
        if rate is not None:
            fields["rate"] = rate
        if total is not None:
            fields["total"] = total
        self.bar.update(self.task, completed=step, **fields)

    def print(self, message: str) -> None:
        """A line above the bar (or plain, without one)."""
        if self.enabled:
            self.bar.console.print(message, highlight=False, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)
