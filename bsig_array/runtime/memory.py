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
#: Sub-blocks at least this large keep the kernels efficient: the plan trades a smaller one for another
#: worker only down to here.
PREFERRED_BLOCK_TOKENS = 1 << 13
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
        Projected peak of one task (one store chunk read, scored block by block and spilled; or one
        merge task).
    driver_bytes
        Projected peak held by the driver: summed histograms, results in flight, the output writer's
        buffers.  Independent of the number of tokens.
    overhead_bytes
        Fixed cost of the Python process.
    block_members
        Tail members a merge task handles at once.
    """

    memory_limit: int
    block_tokens: int
    workers: int
    task_bytes: int
    driver_bytes: int
    overhead_bytes: int
    block_members: int = 1 << 20

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
        Held by the driver for the whole run (nothing per candidate: tasks return only their picks).
    overhead_bytes
        Fixed cost of the Python process plus selection's runtime.
    spill
        Keep the per-candidate selection state (column mean and scale, per fit ``‖x̃‖²`` and its
        floor) in a temporary file, one block in memory at a time (streamed plans only).
    """

    workers: int
    cache: bool
    fold_batch: int
    task_bytes: int
    memory_limit: int
    driver_bytes: int = 0
    overhead_bytes: int = PROCESS_OVERHEAD + RUNTIME_OVERHEAD
    spill: bool = False

    def describe(self) -> str:
        """One line with the plan's numbers."""
        mode = "in memory" if self.cache else "streamed, state spilled to disk" if self.spill else "streamed"
        return (
            f"{self.workers} worker(s) x {format_bytes(self.task_bytes)} per benchmark "
            f"(candidates {mode}, {self.fold_batch} fits per pass) + driver {format_bytes(self.driver_bytes)} "
            f"+ process {format_bytes(self.overhead_bytes)} = {format_bytes(self.projected_bytes)} "
            f"of {format_bytes(self.memory_limit)}"
        )


#: Bytes per tail member while a task or the writer handles it: key, id and code (16 B), the sort
#: order and the sorted copy.
MEMBER_BYTES = 48
#: Bytes of one output tail chunk being gathered and written (token, score and column of its entries).
TAIL_JOB_BYTES = 8 * 2**20
#: Chunk length of the candidate axis of ``candidate_nll`` in the screen output (the plans count it).
CANDIDATE_CHUNK = 1 << 16


def screen_task_bytes(
    *, n_models: int, chunk_tokens: int, itemsize: int, rows: int, block_tokens: int,
    coefficients: Sequence[str], n_benchmarks: int, block_members: int = 0,
) -> int:
    """Projected peak bytes of one screen task.

    A scan task decompresses one store chunk: zarr's compressed buffer, the decoded chunk and the
    copy handed out by indexing, three raw-size buffers (peak measured at 2.8x raw for a 128 MiB
    chunk), with its ids and a member mask; then it copies sub-blocks of ``block_tokens``, ranks
    them (float64), forms the integer codes of all ``rows`` (benchmarks, plus permuted copies in
    pass 2), histograms them and collects a sub-block's tail members (at most every token of the
    sub-block in both tails of every benchmark, before any boundary is known), which it appends to
    the spill at once.  At the end it copies the member columns (at most the chunk).  A merge task
    handles ``block_members`` members at a time plus the ids and masks of its chunk.
    """
    m, w, s, B = n_models, chunk_tokens, block_tokens, n_benchmarks
    chunk = 3 * m * w * itemsize + w * (8 + 1)  # read path buffers, token ids, member mask
    columns = m * w * itemsize + w * 16  # member columns, their ids and positions
    ranks = 3 * m * s * 8  # float64 copy, argsort scratch, ranks
    per_method = 0
    for method in coefficients:
        if method == "thrush":
            per_method = max(per_method, rows * s * (8 + 4))  # float64 product, int32 codes
        else:
            pairs = m * (m - 1) // 2
            per_method = max(per_method, rows * s * (8 + 4) + pairs * s * 2)  # product, codes, pair signs
    hist = [B * lattice(meth, m)[1] * 8 for meth in coefficients]
    hists = 2 * sum(hist) + 3 * max(hist)  # accumulators and host copies; running boundaries' cumsums
    members = MEMBER_BYTES * 2 * B * s  # one sub-block's members of one coefficient
    scan = chunk + max(ranks + per_method + members, columns) + hists
    merge = MEMBER_BYTES * block_members + w * (8 + 1 + 8)
    return int(max(scan, merge))


def screen_driver_bytes(
    *, n_models: int, coefficients: Sequence[str], n_benchmarks: int, workers: int, block_members: int,
    chunk_tokens: int, itemsize: int = 4,
) -> int:
    """Projected peak bytes held by the driver of a screen; independent of the number of tokens.

    Summed histograms and the histograms of the results in flight (one per worker, plus one queued)
    with the running boundaries' cumulative sums; the output writer's running jobs (one per writer
    thread, ``max(2, workers)`` threads; queued jobs have not gathered anything yet), each one tail
    chunk (:data:`TAIL_JOB_BYTES`, plus one array's encoded copy) or one candidate chunk of NLL
    columns (float32, plus its encoded copy, and the mapped pages of one segment's spilled columns),
    with one segment's union arrays; one key block of members and one segment's union (at most a
    chunk).
    """
    hist = [n_benchmarks * lattice(meth, n_models)[1] * 8 for meth in coefficients]
    hists = sum(hist) * (2 + workers) + 3 * max(hist)
    candidates = CANDIDATE_CHUNK * (4 * n_models + 8 + 8 + 8)
    segment = chunk_tokens * (8 + 8 + 4 + 8)  # a segment's union ids, positions, sources, local map
    columns = n_models * chunk_tokens * itemsize  # a segment's spilled columns, mapped while gathered
    writing = max(2, workers) * (max(3 * TAIL_JOB_BYTES // 2, 2 * candidates + columns) + segment)
    merge = MEMBER_BYTES * block_members + chunk_tokens * 20
    return int(hists + writing + merge)


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
    passes: int = 1,
) -> ScreenPlan:
    """Choose block sizes and concurrency of a screen so its projected peak fits ``memory_limit``.

    Nothing here grows with the number of tokens or with ``k``: the candidates stream to the spill
    and to the output.  Prefers the most workers (up to ``max_workers``, default the CPU count) whose
    sub-blocks stay at least :data:`PREFERRED_BLOCK_TOKENS`, then the largest sub-block (up to
    :data:`MAX_BLOCK_TOKENS`) that fits.

    Raises
    ------
    PlanError
        When even one worker with the smallest blocks exceeds the limit (one store chunk does not
        fit); the message gives the projected bytes, the limit, and what to change.
    """
    limit = parse_memory(memory_limit)
    rows = n_benchmarks * (1 + (null_permutations if passes == 2 else 0))
    max_workers = max(1, max_workers or os.cpu_count() or 1)
    n_chunks = -(-n_tokens // chunk_tokens)
    max_workers = min(max_workers, n_chunks)

    def sizes(s: int, w: int) -> tuple[int, int, int]:
        members = max(1 << 16, min(1 << 22, 4 * s * n_benchmarks))
        task = screen_task_bytes(
            n_models=n_models, chunk_tokens=chunk_tokens, itemsize=itemsize, rows=rows, block_tokens=s,
            coefficients=coefficients, n_benchmarks=n_benchmarks, block_members=members,
        )
        driver = screen_driver_bytes(
            n_models=n_models, coefficients=coefficients, n_benchmarks=n_benchmarks, workers=w,
            block_members=members, chunk_tokens=chunk_tokens, itemsize=itemsize,
        )
        return task, driver, members

    def total(s: int, w: int) -> int:
        task, driver, _ = sizes(s, w)
        return overhead + driver + w * task

    smallest = min(MIN_BLOCK_TOKENS, chunk_tokens)
    preferred = min(PREFERRED_BLOCK_TOKENS, chunk_tokens)

    def fit(w: int) -> int:
        """Largest sub-block for ``w`` workers."""
        block = min(MAX_BLOCK_TOKENS, chunk_tokens)
        while total(block, w) > limit and block > smallest:
            block = max(smallest, block // 2)
        return block

    # More workers first (both cores busy), as long as their sub-blocks stay big enough to pay.
    for workers in range(max_workers, 0, -1):
        block = fit(workers)
        if total(block, workers) <= limit and (block >= preferred or workers == 1):
            break
    if total(block, workers) > limit:
        need = total(block, 1)
        hists = sum(n_benchmarks * lattice(meth, n_models)[1] * 8 for meth in coefficients)
        raise PlanError(
            f"screen needs at least {format_bytes(need)} ({n_benchmarks} benchmarks x "
            f"{rows // max(n_benchmarks, 1)} label sets, {n_models} models: exact histograms "
            f"{format_bytes(hists)}, one store chunk of {chunk_tokens} tokens {format_bytes(sizes(block, 1)[0])}) "
            f"but --memory-limit is {format_bytes(limit)}; raise --memory-limit, screen fewer benchmarks or "
            "null permutations, or rechunk the store smaller"
        )
    task, driver, members = sizes(block, workers)
    return ScreenPlan(
        memory_limit=limit, block_tokens=block, workers=workers, task_bytes=task, driver_bytes=driver,
        overhead_bytes=overhead, block_members=members,
    )


def select_task_bytes(
    m: int, n: int, problems: int, cache: bool, method: str, *, spill: bool = False, chunk_bytes: int = 0,
) -> int:
    """Projected peak bytes of one selection task (one benchmark) with ``n`` candidates (checked by RSS tests).

    Reading the candidate lists (ids and positions of both tails, their sort and copies in
    ``benchmark_candidates``) peaks at 80 bytes per candidate (measured 75), and glibc keeps the
    freed part resident, so it counts in full under everything after it: the tie-break priority
    and the permutation it inverts (16 bytes each), one read of ``candidate_nll`` at a time
    (``chunk_bytes``: compressed, decoded and the gather's kept copy), one block of columns being
    standardized (about six float64 temporaries), and per candidate its mean and scale plus
    ``‖x̃‖²`` and its floor per fit, 8·(2 + 2P) bytes, in memory or, spilled, for one block only.
    Cached plans also hold the gathered float32 block (with 16 bytes per candidate of gather
    scratch) and its standardized float64 copy.
    """
    block = min(n, DEFAULT_BLOCK_COLUMNS if cache else STREAM_BLOCK_COLUMNS)
    lists = (80 + 16) * n + 3 * chunk_bytes
    if method == "lasso":  # gathered, covariate, standardized copy, sklearn's Fortran copy
        return lists + 4 * m * n + 3 * 8 * m * n + 8 * 4 * n
    gathered = 4 * m * block + ((4 * m + 16) * n if cache else 0)
    standardized = (8 * m * n if cache else 0) + 6 * 8 * m * block
    state = 8 * (2 + 2 * problems) * (block if spill else n)
    products = 2 * 8 * 2 * problems * block  # the product and its contiguous copy
    return lists + gathered + standardized + state + products


def plan_selection(
    memory_limit: int | str, m: int, n_max: int, *, method: str = "aic", loocv: bool = True, n_tasks: int = 1,
    driver_bytes: int = 0, chunk_bytes: int = 0,
) -> SelectPlan:
    """Pick concurrency, caching, fold batching and spilling for benchmarks of at most ``n_max`` candidates.

    Prefers, in order: the candidates in memory with all fits batched; fewer workers; smaller fold
    batches; then streaming the candidates with as many fits per pass as possible, the
    per-candidate state in memory, else spilled to a temporary file (at most 16 fits per pass, so
    the file holds at most 272 bytes per candidate).  Spilling before shrinking the batch below 16:
    a streamed pass decodes and exponentiates every candidate column, which costs far more than
    reading and writing back the spilled state (measured, 5e5 candidates x 32 models with LOO-CV:
    16 fits per pass spilled 10 s CPU, one fit per pass in memory 88 s).  ``driver_bytes`` is what
    the caller holds for the whole run, ``chunk_bytes`` the largest read of the screen's
    ``candidate_nll``.  Refuses (:class:`~bsig_array.errors.PlanError` with the numbers) only when
    even a spilled task does not fit: when the candidate lists themselves or one read do not.
    """
    limit = parse_memory(memory_limit)
    overhead = PROCESS_OVERHEAD + RUNTIME_OVERHEAD
    budget = limit - overhead - driver_bytes
    cpus = max(1, min(os.cpu_count() or 1, n_tasks))
    problems = (m + 1) if (loocv and method == "aic") else 1
    ladder = sorted({problems, *(b for b in (16, 8, 4, 2, 1) if b < problems)}, reverse=True)
    cached = [(True, batch, False) for batch in ladder]
    streamed = [(False, batch, spill) for batch in ladder for spill in (False, True) if not spill or batch <= 16]
    for cache, batch, spill in cached if method == "lasso" else cached + streamed:
        task = select_task_bytes(m, n_max, batch, cache, method, spill=spill, chunk_bytes=chunk_bytes)
        workers = min(cpus, budget // task) if task > 0 else cpus
        if workers >= 1:
            return SelectPlan(int(workers), cache, batch, int(task), limit, driver_bytes, overhead, spill)
    lasso = method == "lasso"
    need = overhead + driver_bytes + select_task_bytes(
        m, n_max, 1, lasso, method, spill=not lasso, chunk_bytes=chunk_bytes
    )
    chunk = f" (storage chunks of {format_bytes(chunk_bytes)})" if chunk_bytes else ""
    raise PlanError(
        f"selection needs at least {format_bytes(need)} for {n_max} candidates x {m} models{chunk} "
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
