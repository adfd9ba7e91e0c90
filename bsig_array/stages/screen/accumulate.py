"""Histograms summed where they are formed, across a pass's chunks, for tasks run in this process.

A chunk's histograms (at 32 models and 88 benchmarks, 15 MiB of Thrush bins) are formed where its
codes are: on the GPU by the fused kernel, on the host by the numba kernels.  Returning them with
every task and folding them in the driver costs a device-to-host copy and a host add per chunk,
which at GPU rates would bound the screen by the driver.  So when the tasks run in this process
(``--scheduler threads`` or ``synchronous``) each task adds its chunk's histograms into one
:class:`PassHistograms` per pass, which stays on the tasks' device.  The driver makes one per pass
and hands the live object to each task as an argument beside its job (the
:class:`~.tasks.ScreenJob` stays plain picklable data).  It computes the running tail boundaries
from the sums where they live (:func:`bsig_array.kernels.tail_bounds` reduces on the device, only
the per-row boundaries come back) and copies them to the host once, after the pass.

Tasks on a process pool or dask.distributed get no sums and return their histograms with their
results instead: counts held in a worker that dies would be lost without the scheduler knowing.  A
:class:`PassHistograms` refuses to be pickled, so one shipped to another process by mistake is an
error, never counts silently dropped.

Sums of integers are exact in any order, so the histograms, and the screen, are bit for bit those of
the returned-and-folded path.  A chunk is added whole under a lock, and every read of the sums holds
the same lock, so each read sees the counts of whole chunks in every row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from bsig_array import kernels as K

T = TypeVar("T")


class PassHistograms:
    """One pass's histograms per coefficient, summed in place on the device they were formed on.

    Used as ``with PassHistograms() as sums:`` for the length of a pass; once closed it refuses
    further adds (a task adding after the driver read the pass would be a bug, never a result).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, Any] = {}
        self._closed = False
        self.chunks = 0

    def __enter__(self) -> PassHistograms:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the pass: later adds raise."""
        with self._lock:
            self._closed = True

    def __reduce__(self) -> Any:
        raise TypeError("a pass's in-process histogram sums cannot leave this process; "
                        "tasks on other processes return their histograms")

    def add(self, hist: Mapping[str, Any]) -> None:
        """Add one chunk's histograms (the caller hands them over: the first becomes the sum)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("histograms added to a closed pass")
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


def _synchronize(x: Any) -> None:
    if type(x).__module__.split(".")[0] == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.get_current_stream().synchronize()
