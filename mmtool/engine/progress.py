"""Progress of a fit's epochs on stderr: a rich bar on a terminal, a plain line now and then in a log."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any


class _progress:
    """Progress of the epochs on stderr: a rich bar on a terminal; otherwise (a cluster job's log, a pipe)
    a plain line each time another 5% of the epochs is done — at most one per ``MMTOOL_PROGRESS_SECONDS``
    (default 10) seconds, so short trainings such as linear probes stay quiet — and one at the last
    epoch, with the latest loss, validation accuracy, elapsed time and ETA, so a log shows the job is
    alive. Nothing in other ranks than rank 0."""

    EVERY = 0.05

    def __init__(self, total: int, done: int, label: str, show: bool = True) -> None:
        self.total, self.done, self.label, self.show = total, done, label, show
        self.bar = None
        self.lines = False
        self.start = time.monotonic()
        self.first = done  # epochs done before this process started (a resume): not part of the rate
        self.next_line = done + 1

    def __enter__(self):
        if self.show and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done, info="")
        else:
            self.lines = self.show
            self.step = max(1, math.ceil(self.total * self.EVERY))
            self.next_line = (self.done // self.step + 1) * self.step
            self.gap = float(os.environ.get("MMTOOL_PROGRESS_SECONDS", "10"))
            self.last_line = self.start
        return self._advance

    def _advance(self, record: dict[str, Any]) -> None:
        self.done = int(record.get("epoch", self.done + 1))
        info = f"loss {record.get('train_loss', float('nan')):.4f}"
        if "val_accuracy" in record:
            info += f"  val {record['val_accuracy']:.1f}%"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, info=info)
        elif self.lines and (self.done >= self.next_line or self.done == self.total):
            self.next_line = (self.done // self.step + 1) * self.step
            now = time.monotonic()
            if now - self.last_line < self.gap and self.done != self.total:
                return
            self.last_line = now
            elapsed = now - self.start
            rate = elapsed / max(self.done - self.first, 1)
            eta = rate * (self.total - self.done)
            print(f"{self.label}: epoch {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)  {info}  "
                  f"elapsed {_duration(elapsed)}  ETA {_duration(eta)}", file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
