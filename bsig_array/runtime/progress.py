"""The progress protocol between stages and whoever shows progress.

A stage never draws anything: it takes a ``progress`` argument, a :class:`Progress` factory, and
wraps each long loop in ``with progress(description, total, unit) as bar: … bar.advance(n)``.  The
default :func:`no_progress` does nothing; the CLI passes :func:`bsig_array.cli.progress.rich_progress`,
which draws rich bars on stderr.  Library users may pass anything with the same shape (tqdm, a
logger, a test recorder).
"""

from __future__ import annotations

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
