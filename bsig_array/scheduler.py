"""Run a stage's independent per-chunk tasks on a Dask scheduler, streaming results back.

``--scheduler`` names where tasks run:

``threads`` (default)
    Dask's threaded scheduler (the kernels release the GIL).
``processes``
    Dask's multiprocessing scheduler on one pool of spawned worker processes.
``synchronous``
    Everything in the calling thread (debugging, profiling).
``tcp://host:port`` (or any dask.distributed address)
    A running dask.distributed scheduler; the files the tasks read must be reachable from its
    workers.  Tests and notebooks may pass a ``distributed.Client`` object instead of a string.

Whatever the scheduler, at most ``workers`` tasks are in flight and their results come back to the
caller one by one, so the caller can fold them into small accumulators and memory stays within the
plan of :mod:`bsig_array.memory`.  Results arrive in no particular order; callers must merge them
order-independently.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask

from bsig_array.errors import BsigError

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def describe_scheduler(scheduler: Any) -> str:
    """Short name of a scheduler argument (for attributes and messages)."""
    if isinstance(scheduler, str):
        return scheduler
    return f"distributed:{getattr(scheduler, 'scheduler_info', lambda: {})().get('address', '?')}"


def check_scheduler(scheduler: Any) -> None:
    """Refuse an unknown scheduler name before any work starts."""
    if isinstance(scheduler, str):
        if scheduler in LOCAL_SCHEDULERS or "://" in scheduler:
            return
        raise BsigError(
            f"unknown scheduler {scheduler!r}; use threads, processes, synchronous or a dask.distributed "
            "address such as tcp://127.0.0.1:8786"
        )
    if not hasattr(scheduler, "submit"):
        raise BsigError(f"scheduler must be a name or a distributed.Client, got {type(scheduler).__name__}")


class TaskRunner:
    """Maps a function over argument tuples on one scheduler with bounded concurrency.

    Use as a context manager (see :func:`task_runner`); it owns any process pool or client it made.
    """

    def __init__(self, scheduler: Any, workers: int) -> None:
        check_scheduler(scheduler)
        self.scheduler = scheduler
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._own_client = False

    def __enter__(self) -> "TaskRunner":
        if self.scheduler == "processes":
            # One pool for the whole stage: spawning workers (and importing numba kernels) is slow.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        elif isinstance(self.scheduler, str) and "://" in self.scheduler:
            from distributed import Client

            try:
                self._client = Client(self.scheduler, timeout="20s", set_as_default=False)
            except OSError as exc:
                raise BsigError(
                    f"cannot reach dask scheduler at {self.scheduler} ({exc}); start it with "
                    "`dask scheduler` or pick --scheduler threads"
                ) from None
            self._own_client = True
        elif not isinstance(self.scheduler, str):
            self._client = self.scheduler
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._own_client and self._client is not None:
            self._client.close()
        self._client = None

    def imap_unordered(self, fn: Callable[..., Any], arguments: Iterable[tuple]) -> Iterator[Any]:
        """Yield ``fn(*args)`` for every argument tuple, as they finish.

        At most ``workers`` calls are in flight; on dask.distributed a sliding window of futures, on
        the local schedulers batches of ``workers`` tasks computed with ``dask.compute``.
        """
        if self._client is not None:
            yield from self._imap_distributed(fn, arguments)
            return
        batch: list[tuple] = []
        for args in arguments:
            batch.append(args)
            if len(batch) == self.workers:
                yield from self._compute_local(fn, batch)
                batch = []
        if batch:
            yield from self._compute_local(fn, batch)

    def _compute_local(self, fn: Callable[..., Any], batch: list[tuple]) -> Iterator[Any]:
        tasks = [dask.delayed(fn, pure=False)(*args) for args in batch]
        if self.scheduler == "synchronous":
            results = dask.compute(*tasks, scheduler="synchronous")
        elif self.scheduler == "processes":
            results = dask.compute(*tasks, scheduler="processes", pool=self._pool)
        else:
            results = dask.compute(*tasks, scheduler="threads", num_workers=self.workers)
        yield from results

    def _imap_distributed(self, fn: Callable[..., Any], arguments: Iterable[tuple]) -> Iterator[Any]:
        from distributed import as_completed

        client = self._client
        pending = iter(arguments)
        window = as_completed(loop=client.loop)
        for args in pending:
            window.add(client.submit(fn, *args, pure=False))
            if window.count() >= self.workers:
                break
        for future in window:
            result = future.result()  # re-raises the task's exception here
            future.release()
            nxt = next(pending, None)
            if nxt is not None:
                window.add(client.submit(fn, *nxt, pure=False))
            yield result


@contextmanager
def task_runner(scheduler: Any = "threads", workers: int = 1) -> Iterator[TaskRunner]:
    """Context manager giving a :class:`TaskRunner` for ``scheduler`` with ``workers`` in flight."""
    runner = TaskRunner(scheduler, workers)
    with runner:
        yield runner
