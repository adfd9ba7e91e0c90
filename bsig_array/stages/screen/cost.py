"""The screen's cost model: bytes of one task and of the driver, the spill, operations per token (docs/DESIGN.md §5).

Everything that sizes the screen lives here, beside its code: :class:`ScreenCost` offers the
configurations (workers, sub-block) the screen could run in, best first, to the generic planner
(:func:`bsig_array.runtime.memory.fit`), and :func:`plan_screen` is the screen's plan.  The
diagnostics (``bsig plan``, ``bsig profile``) take the screen's costs from here too: the spill's
members per tail (:func:`spill_members_per_tail`, :data:`SPILLED_MEMBER_BYTES`), the bytes and
operations per token of each kernel on the CPU (:func:`kernel_token_costs`) and on a GPU
(:func:`gpu_token_cost`).  The output's own layout constants (chunk of the candidate axis, a tail
write job) belong to :mod:`bsig_array.io.screen_output`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bsig_array.io.screen_output import CANDIDATE_CHUNK, TAIL_JOB_BYTES
from bsig_array.kernels.lattice import lattice
from bsig_array.runtime.memory import PROCESS_OVERHEAD, MemoryPlan, fit, format_bytes

#: Largest token sub-block a screen task processes at once: bigger blocks stop paying (the kernels
#: are memory-bound) and only cost RAM.
MAX_BLOCK_TOKENS = 1 << 16
#: Smallest sub-block worth running; below it per-call overheads dominate.
MIN_BLOCK_TOKENS = 1 << 10
#: Sub-blocks at least this large keep the kernels efficient: the plan trades a smaller one for another
#: worker only down to here.
PREFERRED_BLOCK_TOKENS = 1 << 13
#: Bytes per tail member *in memory*, while a task or the writer handles it: key, id and code (16 B),
#: the sort order and the sorted copy.
TASK_MEMBER_BYTES = 48
#: Bytes per tail member *on disk*, in the spill (:mod:`bsig_array.stages.screen.spill`) and in the
#: merge's kept files: an int32 local id and an int32 code.
SPILLED_MEMBER_BYTES = 8


@dataclass(frozen=True)
class ScreenPlan(MemoryPlan):
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
    members = TASK_MEMBER_BYTES * 2 * B * s  # one sub-block's members of one coefficient
    scan = chunk + max(ranks + per_method + members, columns) + hists
    merge = TASK_MEMBER_BYTES * block_members + w * (8 + 1 + 8)
    return int(max(scan, merge))


def screen_driver_bytes(
    *, n_models: int, coefficients: Sequence[str], n_benchmarks: int, workers: int, block_members: int,
    chunk_tokens: int, itemsize: int = 4,
) -> int:
    """Projected peak bytes held by the driver of a screen; independent of the number of tokens.

    Summed histograms and the histograms of the results in flight (one per worker, plus one queued)
    with the running boundaries' cumulative sums; the output writer's running jobs (one per writer
    thread, ``max(2, workers)`` threads; queued jobs have not gathered anything yet), each one tail
    chunk (:data:`~bsig_array.io.screen_output.TAIL_JOB_BYTES`, plus one array's encoded copy) or
    one candidate chunk of NLL columns (float32, plus its encoded copy, and the mapped pages of one
    segment's spilled columns), with one segment's union arrays; one key block of members and one
    segment's union (at most a chunk).
    """
    hist = [n_benchmarks * lattice(meth, n_models)[1] * 8 for meth in coefficients]
    hists = sum(hist) * (2 + workers) + 3 * max(hist)
    candidates = CANDIDATE_CHUNK * (4 * n_models + 8 + 8 + 8)
    segment = chunk_tokens * (8 + 8 + 4 + 8)  # a segment's union ids, positions, sources, local map
    columns = n_models * chunk_tokens * itemsize  # a segment's spilled columns, mapped while gathered
    writing = max(2, workers) * (max(3 * TAIL_JOB_BYTES // 2, 2 * candidates + columns) + segment)
    merge = TASK_MEMBER_BYTES * block_members + chunk_tokens * 20
    return int(hists + writing + merge)


@dataclass(frozen=True)
class ScreenCost:
    """The screen's memory costs for the generic planner (:func:`bsig_array.runtime.memory.fit`).

    Candidates, best first: the most workers (up to the bound and the number of store chunks) whose
    sub-blocks stay at least :data:`PREFERRED_BLOCK_TOKENS`, each with the largest sub-block (from
    :data:`MAX_BLOCK_TOKENS`, halved down to :data:`MIN_BLOCK_TOKENS`); one worker with any sub-block
    last.  Nothing here grows with the number of tokens or with ``k``: the candidates stream to the
    spill and to the output.
    """

    n_models: int
    n_benchmarks: int
    null_permutations: int
    n_tokens: int
    chunk_tokens: int
    itemsize: int
    coefficients: tuple[str, ...]
    overhead: int = PROCESS_OVERHEAD
    passes: int = 1

    @property
    def rows(self) -> int:
        """Label sets scored per token: the benchmarks, plus their permuted copies in pass 2."""
        return self.n_benchmarks * (1 + (self.null_permutations if self.passes == 2 else 0))

    def members(self, block_tokens: int) -> int:
        """Tail members a merge task handles at once with sub-blocks of ``block_tokens``."""
        return max(1 << 16, min(1 << 22, 4 * block_tokens * self.n_benchmarks))

    def plan(self, block_tokens: int, workers: int, memory_limit: int) -> ScreenPlan:
        """The plan of one configuration, with its projected sizes."""
        members = self.members(block_tokens)
        task = screen_task_bytes(
            n_models=self.n_models, chunk_tokens=self.chunk_tokens, itemsize=self.itemsize, rows=self.rows,
            block_tokens=block_tokens, coefficients=self.coefficients, n_benchmarks=self.n_benchmarks,
            block_members=members,
        )
        driver = screen_driver_bytes(
            n_models=self.n_models, coefficients=self.coefficients, n_benchmarks=self.n_benchmarks, workers=workers,
            block_members=members, chunk_tokens=self.chunk_tokens, itemsize=self.itemsize,
        )
        return ScreenPlan(
            memory_limit=memory_limit, block_tokens=block_tokens, workers=workers, task_bytes=task,
            driver_bytes=driver, overhead_bytes=self.overhead, block_members=members,
        )

    def blocks(self) -> Iterator[int]:
        """Sub-block sizes, largest first: :data:`MAX_BLOCK_TOKENS` (at most the chunk) halved down to the smallest."""
        smallest = min(MIN_BLOCK_TOKENS, self.chunk_tokens)
        block = min(MAX_BLOCK_TOKENS, self.chunk_tokens)
        yield block
        while block > smallest:
            block = max(smallest, block // 2)
            yield block

    def candidates(self, memory_limit: int, max_workers: int) -> Iterator[ScreenPlan]:
        n_chunks = -(-self.n_tokens // self.chunk_tokens)
        preferred = min(PREFERRED_BLOCK_TOKENS, self.chunk_tokens)
        for workers in range(min(max_workers, n_chunks), 0, -1):
            for block in self.blocks():
                if block < preferred and workers > 1:  # more workers only while their sub-blocks pay
                    break
                yield self.plan(block, workers, memory_limit)

    def refusal(self, memory_limit: int, max_workers: int) -> str:
        smallest = self.plan(min(MIN_BLOCK_TOKENS, self.chunk_tokens), 1, memory_limit)
        B, m = self.n_benchmarks, self.n_models
        hists = sum(B * lattice(meth, m)[1] * 8 for meth in self.coefficients)
        return (
            f"screen needs at least {format_bytes(smallest.projected_bytes)} ({B} benchmarks x "
            f"{self.rows // max(B, 1)} label sets, {m} models: exact histograms "
            f"{format_bytes(hists)}, one store chunk of {self.chunk_tokens} tokens "
            f"{format_bytes(smallest.task_bytes)}) but --memory-limit is {format_bytes(memory_limit)}; raise "
            "--memory-limit, screen fewer benchmarks or null permutations, or rechunk the store smaller"
        )


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
    memory_limit: int,
    max_workers: int | None = None,
    overhead: int = PROCESS_OVERHEAD,
    passes: int = 1,
) -> ScreenPlan:
    """Choose block sizes and concurrency of a screen so its projected peak fits ``memory_limit`` (bytes).

    :class:`ScreenCost` on the generic planner: the most workers (up to ``max_workers``, default the
    CPU count) whose sub-blocks stay at least :data:`PREFERRED_BLOCK_TOKENS`, then the largest
    sub-block (up to :data:`MAX_BLOCK_TOKENS`) that fits.  ``k`` is accepted for the callers' sake:
    nothing the screen holds grows with it.

    Raises
    ------
    PlanError
        When even one worker with the smallest blocks exceeds the limit (one store chunk does not
        fit); the message gives the projected bytes, the limit, and what to change.
    """
    cost = ScreenCost(
        n_models=int(n_models), n_benchmarks=int(n_benchmarks), null_permutations=int(null_permutations),
        n_tokens=int(n_tokens), chunk_tokens=int(chunk_tokens), itemsize=int(itemsize),
        coefficients=tuple(coefficients), overhead=int(overhead), passes=int(passes),
    )
    return fit(cost, memory_limit, max_workers)


# ----------------------------------------------------------------------------- disk: the spill


def spill_members_per_tail(alpha: float, k: int, n_tokens: int) -> int:
    """Members the one-pass screen spills per tail over ``n_tokens`` tokens in random order.

    Speculative boundaries (``bsig_array.stages.screen.merge.speculative_bounds``) admit about
    ``1.2·k + 4·√k`` once a prefix is expected to hold 64 final members; before that (the first
    ``64/alpha`` tokens of each chunk, at most) everything enters.  Never more than the tokens.
    Each spilled member takes :data:`SPILLED_MEMBER_BYTES` on disk.
    """
    early = min(n_tokens, math.ceil(64 / alpha))
    return int(min(n_tokens, math.ceil(1.2 * k + 4 * math.sqrt(k) + 16) + early))


# ----------------------------------------------------------------------------- operations per token


def kernel_token_costs(m: int, B: int, itemsize: int) -> dict[str, tuple[float, float]]:
    """(bytes, operations) per token of each screening kernel: inputs read plus outputs written, and
    the comparisons / multiply-adds / increments the CPU and GPU kernels perform (W = 32-bit words of
    models).  The names are ``bsig profile``'s rows."""
    W = -(-m // 32)
    ranks, bits = 2.0 * m * m, 2.0 * m * m  # compare + accumulate per model pair
    t_prod, p_prod = 2.0 * B * m, 3.0 * B * m * W  # multiply-add; and + popcount + add
    nll = m * itemsize
    return {
        "read + decode": (2.0 * nll, 0.0),  # decoded block written, about as much compressed input read
        "ranks": (nll + 4.0 * m, ranks),
        "thrush codes": (nll + 4.0 * B, ranks + t_prod),
        "preselect codes": (nll + 4.0 * B, bits + p_prod),
        "both codes": (nll + 8.0 * B, ranks + t_prod + p_prod),  # one comparison pass feeds both
        "histogram thrush": (4.0 * B, 2.0 * B),  # read a code, increment a bin
        "histogram preselect": (4.0 * B, 2.0 * B),
        "tail test thrush": (4.0 * B + 8.0, 4.0 * B),  # four compares per code against the boundaries
        "tail test preselect": (4.0 * B + 8.0, 4.0 * B),
        "fused chunk": (nll + 8.0 * B, ranks + t_prod + p_prod + 4.0 * B),
        "host to device": (nll, 0.0),  # a chunk copied from a pinned buffer (only on a GPU; share of the link)
    }


def gpu_token_cost(part: str, m: int, B: int) -> tuple[float, float, float]:
    """(HBM bytes, FP64 flops, FP32/INT32 elementwise ops) per token of one part of a screen pass on the GPU.

    Estimates of the fused kernels as written (``kernels/cuda_fused.py``, one thread per token): ``P``
    (float16) is read once by the kernel as same-width integer keys, no widened copy, its m compares
    per model run on registers/L1; codes are written as int32; histogram and tail-count atomics stay in L2
    (the int64 histograms, ~15 MB at 32 models x 88 benchmarks, fit in it).  ``part`` is ``ranks``,
    ``thrush`` (the C·2R product), ``preselect`` (comparison bitmasks, and + popcount per
    benchmark), ``histogram``, ``tail test`` (the fused counts against running boundaries) or
    ``tails`` (one coefficient's members, collected by the portable array-API code on CuPy).
    """
    words = -(-m // 32)
    if part == "ranks":  # read each float16 once (2 bytes); compare + add per model pair
        return 2.0 * m, 0.0, 2.0 * m * m
    if part == "thrush":  # int32 multiply-add per model and benchmark, int32 code written
        return 4.0 * B, 0.0, 2.0 * B * m
    if part == "preselect":  # compare + or per model pair; and + popcount + add per word, model and benchmark
        return 4.0 * B, 0.0, 2.0 * m * m + 3.0 * B * m * words
    if part == "histogram":  # bin index and an int64 atomic add in L2
        return 0.0, 0.0, 2.0 * B
    if part == "tail test":  # four compares against the boundaries, atomics in L2
        return 0.0, 0.0, 4.0 * B
    if part == "tails":  # portable code: two comparisons against the boundaries, masks, compaction of the few members
        return 8 * B + 4 * B + 12 * B, 0.0, 4.0 * B
    raise ValueError(f"unknown GPU part {part!r}")
