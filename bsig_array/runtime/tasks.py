"""The task runner: a stage's independent tasks on a Dask-style scheduler, results streamed back.

Every stage with independent units of work (the screen's store chunks, selection's benchmarks)
runs them through :func:`task_runner`, so ``--scheduler`` means the same for all of them.

``--scheduler`` names where tasks run:

``threads`` (default)
    A pool of threads in this process, as Dask's threaded scheduler (the kernels release the GIL).
``processes``
    One pool of spawned worker processes, as Dask's multiprocessing scheduler.
``synchronous``
    Everything in the calling thread (debugging, profiling).
``tcp://host:port`` (or any dask.distributed address)
    A running dask.distributed scheduler; the stores the tasks read must be reachable from its
    workers (a shared file system, or object storage: a store URL's storage options travel with
    each task, see :mod:`bsig_array.io.location`).  Tests and notebooks may pass a
    ``distributed.Client`` object instead of a string.  The dashboard's address is printed to
    stderr once per scheduler (``bsig: dask dashboard at http://…``).

Whatever the scheduler, at most ``workers`` tasks are in flight and their results come back to the
caller one by one, so the caller can fold them into small accumulators and memory stays within the
plan of :mod:`bsig_array.runtime.memory`.  Results arrive in no particular order; callers must merge them
order-independently.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import islice
from typing import Any

from bsig_array.errors import OptionError, PlanError
from bsig_array.schema import SCHEDULERS


def describe_scheduler(scheduler: Any) -> str:
    """Short name of a scheduler argument (for attributes and messages), without credentials."""
    if isinstance(scheduler, str):
        if "://" in scheduler:  # tls://user:secret@host:port?token=… must not reach an output's attributes
            scheme, _, rest = scheduler.partition("://")
            return f"{scheme}://{rest.rpartition('@')[2].split('?')[0].split('#')[0]}"
        return scheduler
    info: dict[str, Any] = getattr(scheduler, "scheduler_info", lambda: {})()
    return f"distributed:{info.get('address', '?')}"


#: Address schemes of dask.distributed (``distributed.comm.registry``), checked without importing it.
DISTRIBUTED_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
#: Seconds to wait for a dask.distributed scheduler before giving up (said in the message).
CONNECT_TIMEOUT_S = 10


def check_scheduler(scheduler: Any) -> None:
    """Refuse an unknown scheduler name, address scheme or malformed address before any work starts."""
    if isinstance(scheduler, str):
        if scheduler in SCHEDULERS:
            return
        if "://" in scheduler:
            shown = describe_scheduler(scheduler)  # messages never echo credentials
            scheme, _, rest = shown.partition("://")
            if scheme not in DISTRIBUTED_SCHEMES:
                raise OptionError(
                    f"unknown scheduler address scheme {scheme + '://'!r} in {shown!r}; use "
                    f"{', '.join(s + '://' for s in DISTRIBUTED_SCHEMES)} (e.g. tcp://127.0.0.1:8786) or "
                    "threads, processes, synchronous"
                )
            host, colon, port = rest.rpartition(":")
            if not colon:
                host, port = rest, ""
            if scheme != "inproc" and not (host and (not colon or port.isdigit() and 0 < int(port) < 65536)):
                raise OptionError(f"scheduler address {shown!r} needs a host and a port, e.g. tcp://127.0.0.1:8786")
            return
        raise OptionError(
            f"unknown scheduler {scheduler!r}; use threads, processes, synchronous or a dask.distributed "
            "address such as tcp://127.0.0.1:8786"
        )
    if not hasattr(scheduler, "submit"):
        raise OptionError(f"scheduler must be a name or a distributed.Client, got {type(scheduler).__name__}")


class TaskRunner:
    """Maps a function over argument tuples on one scheduler with bounded concurrency.

    Use as a context manager (see :func:`task_runner`); it owns any process pool or client it made.
    """

    def __init__(self, scheduler: Any, workers: int) -> None:
        check_scheduler(scheduler)
        self.scheduler = scheduler
        if int(workers) < 1:
            raise OptionError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers)
        self._pool: Executor | None = None
        self._client: Any = None
        self._own_client = False

    def __enter__(self) -> TaskRunner:
        if self.scheduler == "processes":
            # One pool for the whole stage: spawning workers (and importing numba kernels) is slow.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        elif self.scheduler == "threads":
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bsig-task")
        elif isinstance(self.scheduler, str) and "://" in self.scheduler:
            self._client = open_client(self.scheduler)
            self._own_client = True
        elif not isinstance(self.scheduler, str):
            self._client = self.scheduler
        if self._client is not None:
            announce_dashboard(self._client)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._own_client and self._client is not None:
            self._client.close()
        self._client = None

    @property
    def in_process(self) -> bool:
        """Whether tasks run in this process (threads or synchronous): they may share its memory."""
        return self._client is None and self.scheduler in ("threads", "synchronous")

    def imap_unordered(self, fn: Callable[..., Any], arguments: Iterable[tuple]) -> Iterator[Any]:
        """Yield ``fn(*args)`` for every argument tuple, as they finish.

        At most ``workers`` calls are in flight, in a sliding window: a new task starts as soon as
        the caller has folded a finished one's result, while the other workers keep computing
        (batches would wait for their slowest task and idle while the caller folds).  On
        dask.distributed a window of futures, locally a window on the thread or process pool.
        """
        if self._client is not None:
            yield from self._imap_distributed(fn, arguments)
            return
        if self.scheduler == "synchronous":
            for args in arguments:
                yield fn(*args)
            return
        yield from self._imap_pool(fn, arguments)

    def _imap_pool(self, fn: Callable[..., Any], arguments: Iterable[tuple]) -> Iterator[Any]:
        pool = self._pool
        assert pool is not None, "use the runner as a context manager"
        pending = iter(arguments)
        window = {pool.submit(fn, *args) for args in islice(pending, self.workers)}
        while window:
            done, window = wait(window, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()  # re-raises the task's exception here
                except BrokenProcessPool:
                    raise PlanError(WORKER_DIED.format(how="a worker process died")) from None
                yield result
                # refill only after the caller has folded the result: tasks + held results <= workers
                window.update(pool.submit(fn, *args) for args in islice(pending, 1))

    def _imap_distributed(self, fn: Callable[..., Any], arguments: Iterable[tuple]) -> Iterator[Any]:
        from distributed import as_completed

        client = self._client
        pending = iter(arguments)
        window = as_completed(loop=client.loop)
        for args in pending:
            window.add(client.submit(fn, *args, pure=False))
            if window.count() >= self.workers:
                break
        from distributed import KilledWorker

        for future in window:
            try:
                result = future.result()  # re-raises the task's exception here
            except KilledWorker:
                raise PlanError(WORKER_DIED.format(
                    how="a task's workers died more often than distributed.scheduler.allowed-failures allows"
                )) from None
            future.release()
            nxt = next(pending, None)
            if nxt is not None:
                window.add(client.submit(fn, *nxt, pure=False))
            yield result


def open_client(address: str) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (not made the default client).

    Raises
    ------
    PlanError
        One line when the scheduler cannot be reached within :data:`CONNECT_TIMEOUT_S`.
    """
    from distributed import Client

    try:
        with _quiet_distributed():
            return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlanError(
            f"cannot reach dask scheduler at {describe_scheduler(address)} within {CONNECT_TIMEOUT_S} s "
            f"({reason.replace(address, describe_scheduler(address))}); "
            "start it with `dask scheduler` or pick --scheduler threads"
        ) from None


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """:func:`open_client` as a context manager: the client is closed on exit."""
    client = open_client(address)
    try:
        yield client
    finally:
        client.close()


_announced: set[str] = set()  # scheduler addresses whose dashboard this process has printed


def dashboard_link(client: Any) -> str | None:
    """The dashboard URL of ``client``'s scheduler, or ``None`` when it serves none."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # an old or unusual scheduler: the dashboard line is a courtesy
        return None


def announce_dashboard(client: Any) -> None:
    """Print ``bsig: dask dashboard at URL`` to stderr, once per scheduler address and process."""
    address = describe_scheduler(client)
    if address in _announced:
        return
    _announced.add(address)
    link = dashboard_link(client)
    if link is not None:
        print(f"bsig: dask dashboard at {link}", file=sys.stderr, flush=True)


WORKER_DIED = (
    "{how} (killed from outside or out of memory?); nothing was written; rerun, lowering --workers or "
    "--memory-limit if the machine ran out of memory"
)


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Silence distributed's own logging of a failed connection (tracebacks): the PlanError says it."""
    import logging

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def task_runner(scheduler: Any, workers: int) -> Iterator[TaskRunner]:
    """Context manager giving a :class:`TaskRunner` for ``scheduler`` with ``workers`` in flight."""
    runner = TaskRunner(scheduler, workers)
    with runner:
        yield runner
