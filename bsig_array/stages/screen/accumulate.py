"""Histograms summed where they are formed, across a pass's chunks, for tasks run in this process.

A chunk's histograms (at 32 models and 88 benchmarks, 15 MiB of Thrush bins) are formed where its
codes are: on the GPU by the fused kernel, on the host by the numba kernels.  Returning them with
every task and folding them in the driver costs a device-to-host copy and a host add per chunk,
which at GPU rates would bound the screen by the driver.  So when the tasks run in this process
(``--scheduler threads`` or ``synchronous``) each task adds its chunk's histograms into one
:class:`PassHistograms` per pass, which stays on the tasks' device; the driver computes the running
tail boundaries from it where it lives (:func:`bsig_array.kernels.tail_bounds` reduces on the
device, only the per-row boundaries come back) and copies the sums to the host once, after the pass.

Tasks on a process pool or dask.distributed return their histograms with their results instead:
counts held in a worker that dies would be lost without the scheduler knowing.

Sums of integers are exact in any order, so the histograms, and the screen, are bit for bit those of
the returned-and-folded path.  A chunk is added whole under a lock, and every read of the sums holds
the same lock, so each read sees the counts of whole chunks in every row.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from bsig_array import kernels as K

T = TypeVar("T")

_OPEN: dict[str, PassHistograms] = {}  # by key, while a pass runs in this process


class PassHistograms:
    """One pass's histograms per coefficient, summed in place on the device they were formed on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, Any] = {}
        self.chunks = 0

    def add(self, hist: Mapping[str, Any]) -> None:
        """Add one chunk's histograms (the caller hands them over: the first becomes the sum)."""
        with self._lock:
            for coef, h in hist.items():
                if coef in self._sums:
                    self._sums[coef] += h
                else:
                    self._sums[coef] = h
            for h in self._sums.values():  # finish the adds on this thread's stream before unlocking
                _synchronize(h)
            self.chunks += 1

    def read(self, fn: Callable[[str, Any], T]) -> dict[str, T]:
        """``fn(coefficient, sums)`` for each coefficient, with no chunk being added meanwhile.

        ``fn`` must finish with the sums before it returns (a host result does); it must not keep them.
        """
        with self._lock:
            return {coef: fn(coef, h) for coef, h in self._sums.items()}

    def host(self) -> dict[str, np.ndarray]:
        """The sums as host int64 arrays (one copy per coefficient)."""
        return self.read(lambda _, h: K.to_host(h).astype(np.int64, copy=False))


@contextmanager
def pass_histograms() -> Iterator[tuple[str, PassHistograms]]:
    """A new :class:`PassHistograms` and the key tasks in this process add to it with (:func:`add`)."""
    key = uuid.uuid4().hex
    _OPEN[key] = sums = PassHistograms()
    try:
        yield key, sums
    finally:
        del _OPEN[key]


def add(key: str, hist: Mapping[str, Any]) -> None:
    """Add a chunk's histograms to the pass ``key`` opened in this process by :func:`pass_histograms`."""
    sums = _OPEN.get(key)
    if sums is None:  # a task shipped to another process: a driver bug, never silently dropped counts
        raise RuntimeError(f"no histograms of pass {key} in this process; in-process sums need an in-process scheduler")
    sums.add(hist)


def _synchronize(x: Any) -> None:
    if type(x).__module__.split(".")[0] == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.get_current_stream().synchronize()
