"""Progress bars for long work: the CLI's :class:`~bsig_array.runtime.progress.Progress` (rich, on stderr).

Bars are drawn only when stderr is a terminal, unless ``BSIG_PROGRESS=1`` (always) or ``=0`` (never).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bsig_array.io.faults import fault_point
from bsig_array.runtime.defaults import DEFAULTS, progress_enabled
from bsig_array.runtime.progress import Bar, no_progress


class _RichBar:
    """Handle yielded by :func:`rich_progress`."""

    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task = task_id

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def rich_progress(description: str, total: float | None, unit: str = "") -> Iterator[Bar]:
    """Show a rich progress bar on stderr while the block runs.

    Parameters
    ----------
    description
        Text left of the bar (e.g. ``"screen pass 1/2"``).
    total
        Number of units of work, or None when unknown.
    unit
        Unit shown after the rate, e.g. ``"tokens"``.
    """
    if not progress_enabled(DEFAULTS.progress, sys.stderr.isatty()):
        with no_progress(description, total, unit) as silent:
            yield _FaultBar(silent)
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
        yield _FaultBar(_RichBar(progress, progress.add_task(description, total=total)))


class _FaultBar:
    """Every advance is a :func:`~bsig_array.io.faults.fault_point` (where tests/test_faults.py kills)."""

    def __init__(self, bar: Bar) -> None:
        self._bar = bar

    def advance(self, n: float = 1) -> None:
        fault_point()
        self._bar.advance(n)


class _RateColumn(ProgressColumn):
    """Units per second, blank until rich has a speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s".strip(), style="cyan")
