"""The progress protocol between stages and whoever shows progress.

A stage never draws anything: it takes a ``progress`` argument, a :class:`Progress` factory, and
wraps each long loop in ``with progress(description, total, unit) as bar: … bar.advance(n)``.  The
default :func:`no_progress` does nothing; the CLI passes :func:`bsig_array.cli.progress.rich_progress`,
which draws rich bars on stderr.  Library users may pass anything with the same shape (tqdm, a
logger, a test recorder).

Timings follow the same shape: a stage reports the seconds of its phases to a :class:`Timer`
callback (``timer.add(name, seconds)``, or ``with phase(timer, name): …``) rather than threading a
dict through its calls.  :data:`no_timer` drops them; :class:`Timings` sums them per name, in the
order names are first reported (the screen builds one per run and writes it to its output's
``timings`` attribute).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Bar(Protocol):
    """One running bar: the stage reports finished units of work."""

    def advance(self, n: float = 1) -> None:
        """``n`` more units are done."""


class Progress(Protocol):
    """Factory of bars: ``with progress("screen pass 1/2", total=d, unit="tokens") as bar``."""

    def __call__(self, description: str, total: float | None, unit: str = "") -> AbstractContextManager[Bar]:
        """A context manager yielding a :class:`Bar` for ``total`` units (None: unknown)."""
        ...


class _SilentBar:
    def advance(self, n: float = 1) -> None:
        pass


@contextmanager
def no_progress(description: str, total: float | None, unit: str = "") -> Iterator[Bar]:
    """A :class:`Progress` that shows nothing (the default of every stage)."""
    yield _SilentBar()


class Timer(Protocol):
    """Receives the seconds a run spends in its named phases (a phase may be reported many times)."""

    def add(self, name: str, seconds: float) -> None:
        """``seconds`` more were spent in phase ``name``."""


class _NoTimer:
    def add(self, name: str, seconds: float) -> None:
        pass


#: A :class:`Timer` that drops every report.
no_timer: Timer = _NoTimer()


@contextmanager
def phase(timer: Timer, name: str) -> Iterator[None]:
    """Report the wall time of the ``with`` body to ``timer`` as ``name`` (when the body completes)."""
    t0 = time.perf_counter()
    yield
    timer.add(name, time.perf_counter() - t0)


class Timings:
    """A :class:`Timer` that sums the seconds reported per name, in the order names first arrive."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self, digits: int = 4) -> dict[str, float]:
        """The sums so far, rounded (as recorded in an output's attributes)."""
        return {name: round(s, digits) for name, s in self.seconds.items()}
