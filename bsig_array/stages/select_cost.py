"""Selection's cost model: bytes of one benchmark task, of a read, on the GPU; operations per step (docs/DESIGN.md §5).

Everything that sizes ``bsig select`` lives here, beside :mod:`bsig_array.stages.select`:
:class:`SelectCost` offers the configurations (workers, candidates cached or streamed, fits per
pass, state spilled) selection could run in, best first, to the generic planner
(:func:`bsig_array.runtime.memory.fit`), and :func:`plan_selection` is selection's plan.  The
diagnostics (``bsig plan``, ``bsig profile``) take selection's costs from here too
(:func:`read_bytes`, :func:`forward_step_cost`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bsig_array.kernels.forward import DEFAULT_BLOCK_COLUMNS
from bsig_array.runtime.memory import PROCESS_OVERHEAD, MemoryPlan, fit, format_bytes

#: Selection's own fixed cost on top of the process: numba's compiled kernels and the zarr/dask read
#: machinery (measured: ~60 MiB more RSS after the first selection than after the imports).
RUNTIME_OVERHEAD = 64 * 2**20
#: Columns per block when a benchmark's candidates are streamed instead of held in memory.
STREAM_BLOCK_COLUMNS = 1 << 14
#: Columns read at once when the store's chunks are smaller (a run of consecutive chunks per read).
READ_SPAN_COLUMNS = 1 << 16


@dataclass(frozen=True)
class SelectPlan(MemoryPlan):
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


def read_bytes(m: int, n_candidates: int, chunk_columns: int, itemsize: int) -> int:
    """Bytes of the largest span selection reads from ``candidate_nll`` at once: whole storage chunks of
    ``chunk_columns``, consecutive ones together up to :data:`READ_SPAN_COLUMNS`, at most every column."""
    span = min(max(int(chunk_columns), READ_SPAN_COLUMNS), int(n_candidates))
    return span * int(m) * int(itemsize)


def gpu_task_bytes(m: int, n: int, problems: int) -> int:
    """Device bytes of one in-memory selection on the GPU: float32 columns and their standardized
    float64 copy, per-candidate state and priority, and one block's products, gains and temporaries."""
    block = min(n, DEFAULT_BLOCK_COLUMNS)
    return 12 * m * n + 8 * n * (3 + 2 * problems) + 8 * block * (3 * problems + 2 * m)


def forward_step_cost(m: int) -> tuple[float, float]:
    """(bytes, operations) per candidate column of one AIC forward step with m + 1 fits (LOO-CV):
    the column read once, one dot product per fit."""
    return 8.0 * m, 2.0 * m * (m + 1)


@dataclass(frozen=True)
class SelectCost:
    """Selection's memory costs for the generic planner (:func:`bsig_array.runtime.memory.fit`).

    Candidates, best first: the candidates in memory with all fits batched; fewer workers; smaller
    fold batches; then streaming the candidates with as many fits per pass as possible, the
    per-candidate state in memory, else spilled to a temporary file (at most 16 fits per pass, so
    the file holds at most 272 bytes per candidate).  Spilling before shrinking the batch below 16:
    a streamed pass decodes and exponentiates every candidate column, which costs far more than
    reading and writing back the spilled state (measured, 5e5 candidates x 32 models with LOO-CV:
    16 fits per pass spilled 10 s CPU, one fit per pass in memory 88 s).  Lasso is never streamed.
    """

    m: int
    n_max: int
    method: str = "aic"
    loocv: bool = True
    n_tasks: int = 1
    driver_bytes: int = 0
    chunk_bytes: int = 0

    @property
    def overhead(self) -> int:
        """The process plus selection's runtime."""
        return PROCESS_OVERHEAD + RUNTIME_OVERHEAD

    def configurations(self) -> list[tuple[bool, int, bool]]:
        """(cache, fits per pass, spill) in order of preference."""
        problems = (self.m + 1) if (self.loocv and self.method == "aic") else 1
        ladder = sorted({problems, *(b for b in (16, 8, 4, 2, 1) if b < problems)}, reverse=True)
        cached = [(True, batch, False) for batch in ladder]
        streamed = [(False, batch, spill) for batch in ladder for spill in (False, True) if not spill or batch <= 16]
        return cached if self.method == "lasso" else cached + streamed

    def candidates(self, memory_limit: int, max_workers: int) -> Iterator[SelectPlan]:
        cpus = max(1, min(max_workers, self.n_tasks))
        for cache, batch, spill in self.configurations():
            task = select_task_bytes(
                self.m, self.n_max, batch, cache, self.method, spill=spill, chunk_bytes=self.chunk_bytes
            )
            for workers in range(cpus, 0, -1):  # the most benchmarks at once that this configuration allows
                yield SelectPlan(workers, cache, batch, int(task), memory_limit, self.driver_bytes, self.overhead, spill)

    def refusal(self, memory_limit: int, max_workers: int) -> str:
        lasso = self.method == "lasso"
        need = self.overhead + self.driver_bytes + select_task_bytes(
            self.m, self.n_max, 1, lasso, self.method, spill=not lasso, chunk_bytes=self.chunk_bytes
        )
        chunk = f" (storage chunks of {format_bytes(self.chunk_bytes)})" if self.chunk_bytes else ""
        return (
            f"selection needs at least {format_bytes(need)} for {self.n_max} candidates x {self.m} models{chunk} "
            f"but --memory-limit is {format_bytes(memory_limit)}; raise --memory-limit"
        )


def plan_selection(
    memory_limit: int, m: int, n_max: int, *, method: str = "aic", loocv: bool = True, n_tasks: int = 1,
    driver_bytes: int = 0, chunk_bytes: int = 0, max_workers: int | None = None,
) -> SelectPlan:
    """Pick concurrency, caching, fold batching and spilling for benchmarks of at most ``n_max`` candidates.

    :class:`SelectCost` on the generic planner (its candidates in order of preference).
    ``driver_bytes`` is what the caller holds for the whole run, ``chunk_bytes`` the largest read of
    the screen's ``candidate_nll`` (:func:`read_bytes`); ``max_workers`` bounds the concurrency
    before planning (default the CPU count), as in
    :func:`~bsig_array.stages.screen.cost.plan_screen`.  Refuses
    (:class:`~bsig_array.errors.PlanError` with the numbers) only when even a spilled task does not
    fit: when the candidate lists themselves or one read do not.
    """
    cost = SelectCost(
        m=int(m), n_max=int(n_max), method=method, loocv=bool(loocv), n_tasks=int(n_tasks),
        driver_bytes=int(driver_bytes), chunk_bytes=int(chunk_bytes),
    )
    return fit(cost, memory_limit, max_workers)
