"""The generic memory model: ``--memory-limit`` turned into work sizes and concurrency (docs/DESIGN.md §5).

After cubed's ``primitive/memory.py`` + ``core/plan.py``.  One model for every stage::

    projected peak = process overhead + what the driver holds + workers x one task's peak

Each stage owns its cost model beside its code (the screen's in
:mod:`bsig_array.stages.screen.cost`, selection's in :mod:`bsig_array.stages.select_cost`): the
configurations it could run in, best first, each a :class:`MemoryPlan` with its projected sizes,
and the message that says what it needs.  :func:`fit` walks those configurations and returns the
first whose projected peak fits, or *refuses before running* (a one-line
:class:`~bsig_array.errors.PlanError` in the model's words, with the numbers);
:func:`smallest_limit` is the least limit at which it would fit.  This module knows nothing of any
stage: the process overhead, the plan protocol, the planner, :func:`peak_rss` and
:func:`format_bytes`.  ``tests/test_memory.py`` and ``tests/test_selection.py`` measure real peak RSS
against the plans.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Protocol, TypeVar

from bsig_array.errors import PlanError

#: Fixed cost of the Python process: ~150-215 MiB after importing numpy, dask, distributed, xarray,
#: zarr, numba and pandas, ~100 MiB more on the first numba kernel call (compiled code, threading
#: layer), and glibc's retention of freed chunk-sized buffers (~60 MiB measured with 8 MiB chunks;
#: buffers above its 32 MiB mmap threshold go back to the OS).
PROCESS_OVERHEAD = 384 * 2**20


def format_bytes(n: float) -> str:
    """Human-readable binary size, e.g. ``1.50 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


class MemoryPlan:
    """What every stage's plan states (the fields are its dataclass's): one projection of its peak.

    Attributes
    ----------
    memory_limit
        The promise, in bytes.
    workers
        Tasks run concurrently.
    task_bytes
        Projected peak of one task.
    driver_bytes
        Projected peak held by the driver for the whole run.
    overhead_bytes
        Fixed cost of the process (and the stage's runtime).
    """

    memory_limit: int
    workers: int
    task_bytes: int
    driver_bytes: int
    overhead_bytes: int

    @property
    def projected_bytes(self) -> int:
        """Projected peak RSS of the whole run: overhead + driver + workers x task."""
        return self.overhead_bytes + self.driver_bytes + self.workers * self.task_bytes

    def describe(self) -> str:
        """One line with the plan's numbers."""
        return (
            f"{self.workers} worker(s) x {format_bytes(self.task_bytes)} per task + driver "
            f"{format_bytes(self.driver_bytes)} + process {format_bytes(self.overhead_bytes)} = "
            f"{format_bytes(self.projected_bytes)} of {format_bytes(self.memory_limit)}"
        )


PlanT = TypeVar("PlanT", bound=MemoryPlan)
PlanT_co = TypeVar("PlanT_co", bound=MemoryPlan, covariant=True)


class CostModel(Protocol[PlanT_co]):
    """A stage's memory costs, as the planner asks for them."""

    def candidates(self, memory_limit: int, max_workers: int) -> Iterable[PlanT_co]:
        """Every configuration the stage could run in, best first, as plans stamped with ``memory_limit``.

        ``max_workers`` (at least 1) bounds the workers of any candidate; the sizes of a candidate
        never depend on ``memory_limit``.
        """
        ...

    def refusal(self, memory_limit: int, max_workers: int) -> str:
        """The one-line message when no candidate fits: what the stage needs at least, and what to change."""
        ...


def worker_bound(max_workers: int | None) -> int:
    """The most concurrent tasks a plan may use: ``max_workers``, default this machine's CPU count; at least 1."""
    return max(1, max_workers or os.cpu_count() or 1)


def fit(model: CostModel[PlanT], memory_limit: int, max_workers: int | None = None) -> PlanT:
    """The first of the model's candidates whose projected peak fits ``memory_limit`` (bytes).

    Raises
    ------
    PlanError
        When none fits, with the model's own message of what it needs (before any work runs).
    """
    limit = int(memory_limit)  # bytes, parsed once where the run's settings entered (RunSpec)
    bound = worker_bound(max_workers)
    for plan in model.candidates(limit, bound):
        if plan.projected_bytes <= limit:
            return plan
    raise PlanError(model.refusal(limit, bound))


def smallest_limit(model: CostModel[MemoryPlan], max_workers: int | None = None) -> int:
    """The smallest ``memory_limit`` at which :func:`fit` returns a plan (the stage's "needs at least")."""
    return min(plan.projected_bytes for plan in model.candidates(0, worker_bound(max_workers)))


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux ``VmHWM``).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries the parent's high-water mark across
    ``fork``/``vfork`` + ``exec`` into it, so a child started from a large process (a pytest worker that
    loaded a model) would report its parent's peak.  ``VmHWM`` belongs to the current address space.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
