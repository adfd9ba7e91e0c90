"""Progress bars for long work (rich, on stderr).

Use :func:`progress_bar` around any loop that can run for more than a few seconds.  Bars are drawn
only when stderr is a terminal unless ``BSIG_PROGRESS=1``; ``BSIG_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_enabled() -> bool:
    """Whether progress bars are drawn (env ``BSIG_PROGRESS`` overrides the tty check)."""
    env = os.environ.get("BSIG_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


class _Bar:
    """Handle yielded by :func:`progress_bar`: ``advance(n)`` and ``set_description(text)``."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task = task_id
        self.completed = 0

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_description(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def set_total(self, total: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)


@contextmanager
def progress_bar(description: str, total: float | None, unit: str = "") -> Iterator[_Bar]:
    """Show a rich progress bar on stderr while the block runs.

    Parameters
    ----------
    description
        Text left of the bar (e.g. ``"screen pass 1"``).
    total
        Number of units of work, or None when unknown.
    unit
        Unit shown after the rate, e.g. ``"tokens"``.
    """
    if not progress_enabled():
        yield _Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        task_id = progress.add_task(description, total=total)
        yield _Bar(progress, task_id)


class _RateColumn(ProgressColumn):
    """Units per second, blank until rich has a speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s".strip(), style="cyan")
