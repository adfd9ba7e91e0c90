"""The memory model: ``--memory-limit`` turned into work sizes and concurrency for every stage (docs/DESIGN.md §5).

After cubed's ``primitive/memory.py`` + ``core/plan.py``.  One model for every stage::

    projected peak = process overhead + what the driver holds + workers x one task's peak

Each stage projects the peak of one task from the array sizes it will touch, adds the fixed
overhead of the Python process and what the driver holds, picks the largest work size and
concurrency that fit (:func:`plan_screen`, :func:`plan_selection`), and *refuses before running*
(a one-line :class:`~bsig_array.errors.PlanError` with the numbers) when even the smallest plan does
not fit.  ``tests/test_memory.py`` and ``tests/test_selection.py`` measure real peak RSS
(:func:`peak_rss`) against it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bsig_array.errors import OptionError, PlanError
from bsig_array.kernels.forward import DEFAULT_BLOCK_COLUMNS
from bsig_array.kernels.lattice import lattice

#: Fixed cost of the Python process: ~150-215 MiB after importing numpy, dask, distributed, xarray,
#: zarr, numba and pandas, ~100 MiB more on the first numba kernel call (compiled code, threading
#: layer), and glibc's retention of freed chunk-sized buffers (~60 MiB measured with 8 MiB chunks;
#: buffers above its 32 MiB mmap threshold go back to the OS).
PROCESS_OVERHEAD = 384 * 2**20
#: Selection's own fixed cost on top of the process: numba's compiled kernels and the zarr/dask read
#: machinery (measured: ~60 MiB more RSS after the first selection than after the imports).
RUNTIME_OVERHEAD = 64 * 2**20

#: Largest token sub-block a screen task processes at once: bigger blocks stop paying (the kernels
#: are memory-bound) and only cost RAM.
MAX_BLOCK_TOKENS = 1 << 16
#: Smallest sub-block worth running; below it per-call overheads dominate.
MIN_BLOCK_TOKENS = 1 << 10
#: Columns per block when a benchmark's candidates are streamed instead of held in memory.
STREAM_BLOCK_COLUMNS = 1 << 14

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_memory(text: str | int | float) -> int:
    """Bytes in a memory size such as ``"2GiB"``, ``"500 MB"``, ``"1.5g"`` or ``1e9``.

    Decimal units (kB, MB, GB, TB; also k, m, g, t) are powers of 1000, binary ones (KiB, MiB, GiB,
    TiB) powers of 1024.

    Raises
    ------
    OptionError
        On an unparsable or non-positive size.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise OptionError(f"cannot read memory size {text!r}; write it like 2GiB, 500MB or 1e9")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise OptionError(f"memory size must be positive, got {text!r}; write it like 2GiB")
    return size


def format_bytes(n: float) -> str:
    """Human-readable binary size, e.g. ``1.50 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


class _Projection:
    """The one projection every plan makes (fields provided by the dataclasses below)."""

    memory_limit: int
    workers: int
    task_bytes: int
    driver_bytes: int
    overhead_bytes: int

    @property
    def projected_bytes(self) -> int:
        """Projected peak RSS of the whole run: overhead + driver + workers x task."""
        return self.overhead_bytes + self.driver_bytes + self.workers * self.task_bytes


@dataclass(frozen=True)
class ScreenPlan(_Projection):
    """How a screen runs within its memory limit.

    Attributes
    ----------
    memory_limit
        The promise, in bytes.
    block_tokens
        Tokens scored at once inside a task (a sub-block of one store chunk).
    workers
        Store chunks processed concurrently.
    task_bytes
        Projected peak of one task (one store chunk read and scored block by block).
    driver_bytes
        Projected peak held by the driver: histograms, merged candidate lists, output arrays.
    overhead_bytes
        Fixed cost of the Python process.
    """

    memory_limit: int
    block_tokens: int
    workers: int
    task_bytes: int
    driver_bytes: int
    overhead_bytes: int

    def describe(self) -> str:
        """One line with the plan's numbers."""
        return (
            f"{self.workers} worker(s) x {format_bytes(self.task_bytes)} per task "
            f"({self.block_tokens} tokens/block) + driver {format_bytes(self.driver_bytes)} "
            f"+ process {format_bytes(self.overhead_bytes)} = {format_bytes(self.projected_bytes)} "
            f"of {format_bytes(self.memory_limit)}"
        )


@dataclass(frozen=True)
class SelectPlan(_Projection):
    """How selection runs within its memory limit.

    Attributes
    ----------
    workers
        Benchmarks selected concurrently.
    cache
        Hold each benchmark's standardized candidate block in memory (else stream it per step).
    fold_batch
        Selection problems (full fit + LOO folds) run together in one pass over the candidates.
    task_bytes
        Projected peak of one benchmark task.
    memory_limit
        The promise, in bytes.
    driver_bytes
        Held by the driver for the whole run (the screen's candidate axis).
    overhead_bytes
        Fixed cost of the Python process plus selection's runtime.
    """

    workers: int
    cache: bool
    fold_batch: int
    task_bytes: int
    memory_limit: int
    driver_bytes: int = 0
    overhead_bytes: int = PROCESS_OVERHEAD + RUNTIME_OVERHEAD

    def describe(self) -> str:
        """One line with the plan's numbers."""
        mode = "in memory" if self.cache else "streamed"
        return (
            f"{self.workers} worker(s) x {format_bytes(self.task_bytes)} per benchmark "
            f"(candidates {mode}, {self.fold_batch} fits per pass) + driver {format_bytes(self.driver_bytes)} "
            f"+ process {format_bytes(self.overhead_bytes)} = {format_bytes(self.projected_bytes)} "
            f"of {format_bytes(self.memory_limit)}"
        )


def screen_task_bytes(
    *, n_models: int, chunk_tokens: int, itemsize: int, rows: int, block_tokens: int,
    coefficients: Sequence[str], n_benchmarks: int,
) -> int:
    """Projected peak bytes of one screen task.

    A task decompresses one store chunk: zarr's compressed buffer, the decoded chunk and the copy
    handed out by xarray/dask indexing, three raw-size buffers (peak measured at 2.8x raw for a
    128 MiB chunk), then it copies sub-blocks of ``block_tokens``, ranks them (float64), forms
    the integer codes of all ``rows`` (benchmarks x (1 + null permutations)) and histograms or
    compares them.  In pass 2 it also copies the float32 NLL columns of its tail members (at most
    the whole chunk) with their ids and positions; the driver writes them to its spill as soon as
    they arrive, and writing the output later reads one spilled chunk per worker, which this
    bound covers too.  The tail members a task returns are counted with the driver: all tasks
    together never return more than the final tails plus their boundary ties.
    """
    m, w, s = n_models, chunk_tokens, block_tokens
    chunk = 3 * m * w * itemsize + w * 8  # read path buffers, token ids
    columns = m * w * 4 + w * (8 + 8 + 1)  # member columns, their ids and positions, the member mask
    ranks = 3 * m * s * 8  # float64 copy, argsort scratch, ranks
    per_method = 0
    for method in coefficients:
        if method == "thrush":
            per_method = max(per_method, rows * s * (8 + 4))  # float64 product, int32 codes
        else:
            pairs = m * (m - 1) // 2
            per_method = max(per_method, rows * s * (8 + 4) + pairs * s * 2)  # product, codes, pair signs
    hist = sum(n_benchmarks * lattice(meth, m)[1] * 8 for meth in coefficients)
    return int(chunk + ranks + per_method + 2 * hist + columns)


def screen_driver_bytes(
    *, n_models: int, n_tokens: int, coefficients: Sequence[str], n_benchmarks: int, k: int, workers: int,
) -> int:
    """Projected peak bytes held by the driver of a screen.

    Summed histograms plus one in-flight result per worker; for the ``n`` candidate entries
    (coefficients x benchmarks x 2 tails x k) the output arrays (int64 ids + float64 scores, 16 B each),
    plus the larger of the merge (members 12 B + one method's merged tails) and the candidate union
    (at most ``min(d, n)`` ids: sorted ids, the per-chunk column indices of the lazy gather, and
    the id scan of stores whose ids are not increasing).  The candidates' NLL columns are not
    held: pass 2 spills them to disk (``bsig_array.stages.screen.spill.ColumnSpill``).
    """
    hist = sum(n_benchmarks * lattice(meth, n_models)[1] * 8 for meth in coefficients) * (1 + workers)
    n = len(coefficients) * n_benchmarks * 2 * k
    merge = 12 * n + 12 * n // len(coefficients)
    union = 32 * min(n_tokens, n)
    return int(hist + 16 * n + max(merge, union))


def plan_screen(
    *,
    n_models: int,
    n_benchmarks: int,
    null_permutations: int,
    n_tokens: int,
    chunk_tokens: int,
    itemsize: int,
    coefficients: Sequence[str],
    k: int,
    memory_limit: int | str,
    max_workers: int | None = None,
    overhead: int = PROCESS_OVERHEAD,
) -> ScreenPlan:
    """Choose block size and concurrency of a screen so its projected peak fits ``memory_limit``.

    Prefers the largest block (up to :data:`MAX_BLOCK_TOKENS`) at one worker, then adds workers up
    to ``max_workers`` (default: CPU count) while the projection fits.

    Raises
    ------
    PlanError
        When even one worker with the smallest block exceeds the limit; the message gives the
        projected bytes, the limit, and what to change.
    """
    limit = parse_memory(memory_limit)
    rows = n_benchmarks * (1 + null_permutations)
    max_workers = max(1, max_workers or os.cpu_count() or 1)
    n_chunks = -(-n_tokens // chunk_tokens)
    max_workers = min(max_workers, n_chunks)

    def task(s: int) -> int:
        return screen_task_bytes(
            n_models=n_models, chunk_tokens=chunk_tokens, itemsize=itemsize, rows=rows,
            block_tokens=s, coefficients=coefficients, n_benchmarks=n_benchmarks,
        )

    def total(s: int, w: int) -> int:
        driver = screen_driver_bytes(
            n_models=n_models, n_tokens=n_tokens, coefficients=coefficients, n_benchmarks=n_benchmarks, k=k, workers=w,
        )
        return overhead + driver + w * task(s)

    block = min(MAX_BLOCK_TOKENS, chunk_tokens)
    smallest = min(MIN_BLOCK_TOKENS, chunk_tokens)
    while block > smallest and total(block, 1) > limit:
        block = max(smallest, block // 2)
    if total(block, 1) > limit:
        need = total(block, 1)
        raise PlanError(
            f"screen needs at least {format_bytes(need)} ({n_benchmarks} benchmarks x "
            f"{1 + null_permutations} label sets, {n_models} models, store chunks of {chunk_tokens} tokens, "
            f"k={k} per tail) but --memory-limit is {format_bytes(limit)}; raise --memory-limit, screen fewer "
            "benchmarks or null permutations, lower --alpha, or rechunk the store smaller"
        )
    workers = 1
    while workers < max_workers and total(block, workers + 1) <= limit:
        workers += 1
    driver = screen_driver_bytes(
        n_models=n_models, n_tokens=n_tokens, coefficients=coefficients, n_benchmarks=n_benchmarks, k=k, workers=workers,
    )
    return ScreenPlan(
        memory_limit=limit, block_tokens=block, workers=workers, task_bytes=task(block),
        driver_bytes=driver, overhead_bytes=overhead,
    )


#: Selection's own fixed cost on top of the process: numba's compiled kernels and the zarr/dask read
#: machinery (measured: ~60 MiB more RSS after the first selection than after the imports).


def select_task_bytes(m: int, n: int, problems: int, cache: bool, method: str) -> int:
    """Projected peak bytes of one selection task (one benchmark) with ``n`` candidates (checked by an RSS test).

    The gathered float32 block counts twice (dask concatenates its chunk pieces), each block being
    standardized holds about six float64 temporaries, and every fit keeps two float64 per candidate.
    """
    block = min(n, DEFAULT_BLOCK_COLUMNS if cache else STREAM_BLOCK_COLUMNS)
    if method == "lasso":  # gathered (x2), covariate, standardized copy, sklearn's Fortran copy
        return 2 * 4 * m * n + 3 * 8 * m * n + 8 * 4 * n
    gathered = 2 * 4 * m * (n if cache else block)
    standardized = (8 * m * n if cache else 0) + 6 * 8 * m * block
    state = 16 * problems * n + 4 * 8 * n  # norm2 + floor per fit; priority, mean, scale, token ids
    products = 2 * 8 * 2 * problems * block  # the product and its contiguous copy
    return gathered + standardized + state + products


def plan_selection(
    memory_limit: int | str, m: int, n_max: int, *, method: str = "aic", loocv: bool = True, n_tasks: int = 1,
    driver_bytes: int = 0,
) -> SelectPlan:
    """Pick concurrency, caching and fold batching for benchmarks of at most ``n_max`` candidates.

    Prefers, in order: everything in memory with all fits batched; fewer workers; smaller fold
    batches; streaming.  ``driver_bytes`` is what the caller holds for the whole run (the screen's
    candidate axis).  Refuses (:class:`~bsig_array.errors.PlanError` with the numbers) when even one
    streamed task with one fit per pass does not fit.
    """
    limit = parse_memory(memory_limit)
    overhead = PROCESS_OVERHEAD + RUNTIME_OVERHEAD
    budget = limit - overhead - driver_bytes
    cpus = max(1, min(os.cpu_count() or 1, n_tasks))
    problems = (m + 1) if (loocv and method == "aic") else 1
    for cache in (True, False):
        if method == "lasso" and not cache:
            break
        batches = sorted({problems, *(b for b in (16, 8, 4, 2, 1) if b < problems)}, reverse=True)
        for batch in batches:
            task = select_task_bytes(m, n_max, batch, cache, method)
            workers = min(cpus, budget // task) if task > 0 else cpus
            if workers >= 1:
                return SelectPlan(int(workers), cache, batch, int(task), limit, driver_bytes, overhead)
    need = overhead + driver_bytes + select_task_bytes(m, n_max, 1, method == "lasso", method)
    raise PlanError(
        f"selection needs at least {format_bytes(need)} for {n_max} candidates x {m} models "
        f"but --memory-limit is {format_bytes(limit)}; raise --memory-limit"
    )


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
