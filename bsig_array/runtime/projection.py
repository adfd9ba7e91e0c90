"""Run planning: calibrate the kernels on this machine, then project a full run (``bsig plan``).

:func:`calibrate` times every screening kernel, a forward-selection step and the store's read +
decode path for a few seconds, single-threaded, at the run's own numbers of models and benchmarks.
:func:`project` turns those rates into wall time, disk and peak memory for every stage and pass of
a run of any size: the screen in one pass (with its spill) and the two-pass fallback, the merge and
output write, and selection.  Memory comes from the stages' own plans
(:func:`~bsig_array.runtime.memory.plan_screen`, :func:`~bsig_array.runtime.memory.plan_selection`,
docs/DESIGN.md §5), so a projection refuses exactly what the run would refuse.

The scaling assumptions are part of the result (:attr:`Projection.assumptions`): CPU work scales
linearly with cores up to N, a pass takes the longer of its CPU and its disk time at a stated disk
bandwidth, and the GPU figures are a datasheet's, not measurements.

The read probe lives with the caller (the CLI writes a small store with the package's writer and
reads it back through the screen's read path): the runtime layer does not import ``io``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from bsig_array import kernels as K
from bsig_array.errors import OptionError, PlanError
from bsig_array.options import check_alpha, check_choice, resolve_coefficients
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.memory import CANDIDATE_CHUNK, parse_memory, plan_screen, plan_selection
from bsig_array.schema import MIN_MODELS

#: Disk bandwidth, read and write, in bytes/s: stated, not measured (one NVMe SSD streaming large
#: sequential chunk files; page-cache speeds on this machine would say nothing about a 1 TB store).
DISK_BYTES_PER_S = 1.0e9
#: Bytes of one spilled or merged tail member: int32 local id + int32 code.
MEMBER_BYTES = 8
#: Bytes of one entry of ``candidate_token`` + ``candidate_score`` + ``candidate_column`` (int64, float64, int64).
CANDIDATE_BYTES = 24
#: Bytes per stored NLL value of ``candidate_nll`` and of the spilled member columns (float32).
NLL_BYTES = 4
#: A limit no plan reaches: used to ask a plan what it *would* need.
UNBOUNDED = 1 << 62
#: Candidate columns of the forward-selection calibration.
FORWARD_COLUMNS = 4096
#: Raw bytes of the default read-probe store.
PROBE_BYTES = 32 << 20
#: Items sorted per call in the merge calibration.
SORT_ITEMS = 1 << 20
#: Kernels :func:`calibrate` times (tokens/s, except ``sort``: ids/s).
KERNELS = (
    "read", "ranks", "thrush", "preselect", "both",
    "histogram_thrush", "histogram_preselect", "tails_thrush", "tails_preselect", "sort",
)


@dataclass(frozen=True)
class DeviceFigures:
    """Stated figures of one accelerator (a datasheet's, never measured here).

    Attributes
    ----------
    name
        The device.
    hbm_bytes_per_s
        Device memory bandwidth.
    fp64_flops
        Float64 matrix-product rate (the CuPy kernels multiply in float64 so TF32 cannot round).
    fp32_ops
        Elementwise float32 rate (comparisons, casts, sums).
    link_bytes_per_s
        Host-to-device bandwidth, one direction.
    source
        Where the figures come from.
    """

    name: str
    hbm_bytes_per_s: float
    fp64_flops: float
    fp32_ops: float
    link_bytes_per_s: float
    source: str


#: NVIDIA H200 SXM.  FP64 products use the FP64 Tensor Core rate (cuBLAS DGEMM on Hopper).
H200 = DeviceFigures(
    name="NVIDIA H200 SXM",
    hbm_bytes_per_s=4.8e12,
    fp64_flops=67e12,
    fp32_ops=67e12,
    link_bytes_per_s=64e9,
    source=(
        "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200): HBM3e 4.8 TB/s, "
        "FP64 Tensor Core 67 TFLOPS, FP32 67 TFLOPS, PCIe Gen5 128 GB/s (64 GB/s each way)"
    ),
)


@dataclass(frozen=True)
class ReadSample:
    """One timed read of a store: ``tokens`` read and decoded in ``seconds``.

    ``raw_bytes`` / ``stored_bytes`` (the NLL chunk files on disk) give the compression ratio.
    """

    tokens: int
    seconds: float
    raw_bytes: int
    stored_bytes: int


#: ``probe(models, tokens) -> ReadSample``: write a store of that size and time reading it back.
ReadProbe = Callable[[int, int], ReadSample]


@dataclass(frozen=True)
class Calibration:
    """Single-worker rates measured on this machine at the run's models and benchmarks.

    Attributes
    ----------
    models, benchmarks
        The sizes the kernels ran at (their cost per token depends on both).
    block_tokens
        Tokens per kernel call.
    rates
        Items per second of each kernel in :data:`KERNELS` (tokens; ``sort``: token ids).
    forward_setup_s
        Seconds per candidate column to standardize it and start m + 1 fits (LOO-CV).
    forward_step_s
        Seconds per candidate column and forward step, m + 1 fits at once.
    compression
        Raw over stored bytes of the probe store's NLL chunks.
    seconds
        Wall time of the whole calibration.
    machine
        What it ran on.
    """

    models: int
    benchmarks: int
    block_tokens: int
    rates: dict[str, float]
    forward_setup_s: float
    forward_step_s: float
    compression: float
    seconds: float = 0.0
    machine: str = ""


@dataclass(frozen=True)
class DiskSizes:
    """Bytes on disk of a run's artifacts (docs/DESIGN.md §3); all uncompressed but the store.

    Attributes
    ----------
    store_raw, store
        ``nll`` as m·d·itemsize, and that over the measured compression ratio.
    candidates
        ``candidate_token`` + ``candidate_score`` + ``candidate_column``: 24 B x coefficients x B x 2 tails x k.
    union
        Distinct candidates, at most ``min(d, coefficients·B·2k)``.
    candidate_nll
        4 B x m x union.
    histograms, thresholds
        8 B per bin of each coefficient's lattice per benchmark; 8 B per tail.
    screen_output
        Sum of the four above.
    spill_members
        One-pass screen: members admitted by the speculative boundaries per benchmark and tail,
        about ``1.2·k`` each (:func:`spill_members_per_tail`), over coefficients x B x 2 tails.
    spill_one_pass
        8 B per member plus itemsize x m per distinct member token (at most ``min(d, spill_members)``):
        the members' NLL columns are spilled in the store's dtype.
    spill_two_pass
        Two-pass screen: the members' NLL columns, itemsize x m x union.
    signatures
        ``signatures.zarr`` without contexts: three (B, m − 2) 8-byte arrays and seven per benchmark.
    """

    store_raw: int
    store: int
    candidates: int
    union: int
    candidate_nll: int
    histograms: int
    thresholds: int
    screen_output: int
    spill_members: int
    spill_one_pass: int
    spill_two_pass: int
    signatures: int


@dataclass(frozen=True)
class StageProjection:
    """One stage or pass of the run.

    Attributes
    ----------
    stage
        ``screen``, ``merge + write`` or ``select``.
    mode
        ``one pass`` or ``two passes`` (the screen's), ``both`` for selection.
    step
        ``pass 1/1``, ``pass 1/2``, ``pass 2/2`` of the screen, else empty.
    work
        What the row does, in words.
    cpu_s
        Single-core CPU seconds (measured rates x work).
    read_bytes, write_bytes
        Disk traffic.
    wall_s
        Projected wall time on N cores: ``max(cpu_s / N_eff, disk bytes / disk bandwidth)``.
    bound
        ``cpu`` or ``disk``: which of the two sets ``wall_s``.
    peak_bytes
        Projected peak RSS of the stage's memory plan; ``None`` when the plan is refused.
    need_bytes
        The smallest ``--memory-limit`` at which the stage's plan fits at all (its "needs at least").
    plan
        The plan's one-line description, or the refusal.
    gpu_wall_s, gpu_bound
        On one GPU (stated figures), for screen passes with ``device="gpu"``; else ``None``.  The bound
        is ``read`` (host read + decode), ``link`` (host to device), ``HBM``, ``FP64``, ``FP32`` or ``disk``.
    """

    stage: str
    mode: str
    step: str
    work: str
    cpu_s: float
    read_bytes: int
    write_bytes: int
    wall_s: float
    bound: str
    peak_bytes: int | None
    need_bytes: int
    plan: str
    gpu_wall_s: float | None = None
    gpu_bound: str | None = None

    @property
    def fits(self) -> bool:
        """Whether the stage's memory plan fits ``--memory-limit``."""
        return self.peak_bytes is not None


@dataclass(frozen=True)
class Projection:
    """A projected run: inputs, disk sizes, every stage and pass, and the assumptions behind them."""

    n_tokens: int
    n_models: int
    n_benchmarks: int
    alpha: float
    k: int
    coefficients: tuple[str, ...]
    memory_limit: int
    cores: int
    device: str
    chunk_tokens: int
    itemsize: int
    disk_bytes_per_s: float
    disk: DiskSizes
    stages: tuple[StageProjection, ...]
    calibration: Calibration
    assumptions: tuple[str, ...]
    gpu: DeviceFigures | None = None
    #: whether :func:`plan_screen` plans each screen mode separately (takes ``passes=``)
    passes_planned: bool = False

    def rows(self, mode: str) -> list[StageProjection]:
        """The stages of one screen mode (``one pass`` or ``two passes``) followed by selection."""
        return [s for s in self.stages if s.mode in (mode, "both")]

    def total_wall_s(self, mode: str, *, gpu: bool = False) -> float:
        """Wall time of the whole run in one screen mode (GPU rows where projected)."""
        return sum((s.gpu_wall_s if gpu and s.gpu_wall_s is not None else s.wall_s) for s in self.rows(mode))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (stages as a list, ``fits`` and totals included)."""
        out = dataclasses.asdict(self)
        out["coefficients"] = list(self.coefficients)
        out["stages"] = [{**dataclasses.asdict(s), "fits": s.fits} for s in self.stages]
        out["assumptions"] = list(self.assumptions)
        out["total_wall_s"] = {mode: self.total_wall_s(mode) for mode in ("one pass", "two passes")}
        if self.gpu is not None:
            out["total_wall_s_gpu"] = {mode: self.total_wall_s(mode, gpu=True) for mode in ("one pass", "two passes")}
        return out


# ----------------------------------------------------------------------------- checks


def check_run(
    n_tokens: float, n_models: int, n_benchmarks: int, alpha: float, coefficients: str | Sequence[str],
) -> tuple[int, int, int, float, tuple[str, ...]]:
    """Check the sizes of a run to plan; return them as ints, alpha, and the coefficients tuple.

    Raises
    ------
    OptionError
        On tokens < 2 or not whole, models outside [3, MAX_MODELS], benchmarks < 1, alpha outside
        (0, 0.5), or an unknown coefficient.
    """
    try:
        whole = float(n_tokens) == math.floor(float(n_tokens))
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or float(n_tokens) < 2:
        raise OptionError(f"--tokens must be a whole number >= 2 (tokens in the store), got {n_tokens}; e.g. --tokens 1.69e7")
    if int(n_models) != n_models or not MIN_MODELS <= int(n_models) <= K.MAX_MODELS:
        raise OptionError(
            f"--models must be an integer in [{MIN_MODELS}, {K.MAX_MODELS}] (the screening kernels' range), got {n_models}"
        )
    if int(n_benchmarks) != n_benchmarks or int(n_benchmarks) < 1:
        raise OptionError(f"--benchmarks must be an integer >= 1, got {n_benchmarks}")
    return int(n_tokens), int(n_models), int(n_benchmarks), check_alpha(alpha), resolve_coefficients(coefficients)


# ----------------------------------------------------------------------------- calibration


def _rate(fn: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second of ``fn``'s fastest call within ``seconds``, after one warm-up call.

    The fastest call, not the mean: on a shared machine other processes only ever slow a call down
    (numba compiles or loads its cache in the warm-up).
    """
    fn()
    best = math.inf
    t0 = time.perf_counter()
    while True:
        t1 = time.perf_counter()
        fn()
        now = time.perf_counter()
        best = min(best, now - t1)
        if now - t0 >= seconds:
            return items / max(best, 1e-9)


def _forward_costs(m: int, seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    """(setup, step) seconds per candidate column of AIC forward selection with m + 1 fits (LOO-CV).

    Two runs that differ only in their number of steps separate the per-step cost from the
    standardization and start-up every benchmark pays once.
    """
    n = FORWARD_COLUMNS
    X = (rng.gamma(0.8, 2.5, (m, n)) * np.exp(0.3 * rng.standard_normal((m, n)))).astype(np.float32)
    y = rng.integers(0, 500, m) / 500.0
    masks = ~np.eye(m + 1, m, k=-1, dtype=bool)  # row 0: all models; row i: model i - 1 left out

    def run(steps: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        path = K.forward_select(X, y, row_masks=masks, max_features=steps, exponentiate=True)
        return time.perf_counter() - t0, int(path.n_selected.max())

    run(1)  # warm-up: numba cache, BLAS
    few, many = 1, max(1, min(4, m - 2))
    t_few = t_many = math.inf
    s_few = s_many = 0
    t0 = time.perf_counter()
    while math.isinf(t_many) or time.perf_counter() - t0 < seconds:  # fastest of each, as in _rate
        a, s_few = run(few)
        b, s_many = run(many)
        t_few, t_many = min(t_few, a), min(t_many, b)
    if s_many > s_few and t_many > t_few:
        step = (t_many - t_few) / (s_many - s_few)
        setup = max(t_few - s_few * step, 0.0)
    else:  # one step is all m allows, or noise hid the difference: charge everything to the steps
        step, setup = t_many / max(s_many, 1), 0.0
    return setup / n, step / n


def calibrate(
    models: int,
    benchmarks: int,
    coefficients: str | Sequence[str] = "both",
    *,
    read_probe: ReadProbe,
    alpha: float | None = None,
    ties: str | None = None,
    block_tokens: int = 1 << 12,
    read_tokens: int | None = None,
    seconds: float = 0.1,
    seed: int = 0,
) -> Calibration:
    """Measure every kernel's single-worker rate at ``models`` x ``benchmarks``.

    Parameters
    ----------
    models, benchmarks
        The run's sizes: the kernels' cost per token grows with both.
    coefficients
        Accepted for symmetry with :func:`project`; every coefficient's kernels are timed.
    read_probe
        Writes a store of (models, tokens) and times reading it back through the screen's read path
        (the CLI's uses the package's writer and ``chunk_sources``).
    alpha, ties
        Tail fraction of the tail-members calibration and the rank ties (defaults: ``DEFAULTS``).
    block_tokens
        Tokens per kernel call.
    read_tokens
        Tokens of the probe store (default: about 32 MiB of float32 NLLs, so per-chunk overheads
        weigh as little as in a real store's 2**20-token chunks).
    seconds
        Timing budget per kernel after its warm-up call.
    seed
        Seed of the synthetic NLLs and scores.

    Returns
    -------
    Calibration
        Rates measured with one numba and one BLAS thread (a single worker).
    """
    import numba
    from threadpoolctl import threadpool_limits

    resolve_coefficients(coefficients)
    m, B, s = int(models), int(benchmarks), int(block_tokens)
    alpha = DEFAULTS.alpha if alpha is None else alpha
    ties = DEFAULTS.ties if ties is None else ties
    rng = np.random.default_rng(seed)
    # NLL-like values (gamma difficulty x lognormal model noise) and accuracy-like scores with ties
    P = (rng.gamma(0.8, 2.5, (m, s)) * np.exp(0.3 * rng.standard_normal((m, s)))).astype(np.float32)
    Y = rng.integers(0, 500, (B, m)) / 500.0
    ids = np.arange(s, dtype=np.int64)
    k = K.tail_size(alpha, s)
    t_start = time.perf_counter()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # one worker on one core: the projection scales it to N
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            rates = {
                "ranks": _rate(lambda: K.ranks(P, ties), s, seconds),
                "thrush": _rate(lambda: K.thrush_codes(P, Y, ties), s, seconds),
                "preselect": _rate(lambda: K.preselect_codes(P, Y), s, seconds),
                "both": _rate(lambda: K.screen_codes(P, Y, ties), s, seconds),
            }
            codes = K.screen_codes(P, Y, ties)
            for c in ("thrush", "preselect"):
                hist = K.histogram_codes(codes[c], c, m)
                bounds = K.tail_bounds(hist, k, c, m)
                rates[f"histogram_{c}"] = _rate(partial(K.histogram_codes, codes[c], c, m, out=hist), s, seconds)
                rates[f"tails_{c}"] = _rate(partial(K.tail_members, codes[c], ids, bounds), s, seconds)
            members = rng.integers(0, 1 << 40, SORT_ITEMS)
            rates["sort"] = _rate(lambda: K.sorted_unique(members), SORT_ITEMS, seconds)
            setup, step = _forward_costs(m, seconds, rng)
    finally:
        numba.set_num_threads(threads)
    if read_tokens is None:
        read_tokens = max(1 << 12, min(1 << 18, PROBE_BYTES // (4 * m)))
    sample = read_probe(m, int(read_tokens))
    rates["read"] = sample.tokens / sample.seconds
    return Calibration(
        models=m, benchmarks=B, block_tokens=s, rates={name: float(rates[name]) for name in KERNELS},
        forward_setup_s=float(setup), forward_step_s=float(step),
        compression=sample.raw_bytes / max(sample.stored_bytes, 1), seconds=time.perf_counter() - t_start,
        machine=f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".replace(" ,", ","),
    )


# ----------------------------------------------------------------------------- disk


def spill_members_per_tail(alpha: float, k: int, n_tokens: int) -> int:
    """Members the one-pass screen spills per tail over ``n_tokens`` tokens in random order.

    Speculative boundaries (``bsig_array.stages.screen.merge.speculative_bounds``) admit about
    ``1.2·k + 4·√k`` once a prefix is expected to hold 64 final members; before that (the first
    ``64/alpha`` tokens of each chunk, at most) everything enters.  Never more than the tokens.
    """
    early = min(n_tokens, math.ceil(64 / alpha))
    return int(min(n_tokens, math.ceil(1.2 * k + 4 * math.sqrt(k) + 16) + early))


def disk_sizes(
    *, n_tokens: int, n_models: int, n_benchmarks: int, alpha: float, coefficients: Sequence[str],
    itemsize: int = 4, compression: float = 1.0,
) -> DiskSizes:
    """Bytes of the store, screen output, screen spills and signatures (see :class:`DiskSizes`)."""
    d, m, B, C = int(n_tokens), int(n_models), int(n_benchmarks), len(coefficients)
    k = K.tail_size(alpha, d)
    entries = C * B * 2 * k
    union = min(d, entries)
    candidates = CANDIDATE_BYTES * entries
    candidate_nll = NLL_BYTES * m * union
    histograms = 8 * B * sum(K.lattice(c, m)[1] for c in coefficients)
    thresholds = 8 * C * B * 2
    members = C * B * 2 * spill_members_per_tail(alpha, k, d)
    store_raw = m * d * int(itemsize)
    return DiskSizes(
        store_raw=store_raw,
        store=int(round(store_raw / compression)),
        candidates=candidates,
        union=union,
        candidate_nll=candidate_nll,
        histograms=histograms,
        thresholds=thresholds,
        screen_output=candidates + candidate_nll + histograms + thresholds,
        spill_members=members,
        spill_one_pass=MEMBER_BYTES * members + int(itemsize) * m * min(d, members),
        spill_two_pass=int(itemsize) * m * union,
        signatures=B * (m - 2) * 3 * 8 + B * 7 * 8,
    )


# ----------------------------------------------------------------------------- GPU


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


#: The fused screening kernel's goal on one GPU (issue 13): stated by ``bsig plan --device gpu``.
GPU_TARGET_TOKENS_PER_S = 1e9


def fused_gpu_rate(m: int, B: int, gpu: DeviceFigures) -> tuple[float, str]:
    """Projected tokens/s (and bound) of the fused kernel alone, both coefficients, from stated figures."""
    parts = ["ranks", "thrush", "preselect", "histogram", "histogram", "tail test", "tail test"]
    seconds, bound = _gpu_pass(parts, m, B, gpu)
    return 1.0 / seconds, bound


def _gpu_pass(parts: Sequence[str], m: int, B: int, gpu: DeviceFigures) -> tuple[float, str]:
    """Seconds per token on the device (roofline: the slowest of memory, products, elementwise)."""
    hbm = fp64 = fp32 = 0.0
    for part in parts:
        a, b, c = gpu_token_cost(part, m, B)
        hbm, fp64, fp32 = hbm + a, fp64 + b, fp32 + c
    times = {"HBM": hbm / gpu.hbm_bytes_per_s, "FP64": fp64 / gpu.fp64_flops, "FP32": fp32 / gpu.fp32_ops}
    bound = max(times, key=lambda key: times[key])
    return times[bound], bound


# ----------------------------------------------------------------------------- projection


def _smallest_limit(fits: Callable[[int], bool]) -> int:
    """The smallest ``--memory-limit`` (bytes) at which ``fits`` holds (bisection: plans fit monotonically)."""
    lo, hi = 0, UNBOUNDED
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def _fits(plan: Callable[..., Any], **kwargs: Any) -> Callable[[int], bool]:
    def fits(limit: int) -> bool:
        try:
            plan(memory_limit=limit, **kwargs)
        except PlanError:
            return False
        return True

    return fits


def _plan_screen(passes: int, cores: int, limit: int, **sizes: Any) -> tuple[int | None, int, str]:
    """(peak or None, smallest limit that fits, description or refusal) of the screen's plan at ``cores``."""
    if "passes" in inspect.signature(plan_screen).parameters:  # the one-pass screen's plan knows both
        sizes["passes"] = passes
    need = _smallest_limit(_fits(plan_screen, max_workers=cores, **sizes))
    try:
        plan = plan_screen(memory_limit=limit, max_workers=cores, **sizes)
    except PlanError as exc:
        return None, need, f"does not fit: {exc}"
    return plan.projected_bytes, need, plan.describe()


def _plan_select(cores: int, limit: int, m: int, n_max: int, B: int, n_union: int) -> tuple[int | None, int, str, Any]:
    """Selection's plan at ``cores`` workers: (peak or None, smallest limit that fits, description, plan).

    As ``bsig select`` plans it: the driver holds nothing per candidate (each task reads its own
    candidate lists).  A refused plan is replaced, for the time projection, by the plan with memory enough for N workers.
    """

    def at_cores(plan: Any) -> Any:  # plan_selection caps workers at this machine's CPUs; project for N
        budget = plan.memory_limit - plan.overhead_bytes - plan.driver_bytes
        workers = min(cores, B, max(1, budget // max(plan.task_bytes, 1)))
        return dataclasses.replace(plan, workers=int(workers))

    sizes: dict[str, Any] = dict(m=m, n_max=n_max, n_tasks=B, driver_bytes=0)
    if "chunk_bytes" in inspect.signature(plan_selection).parameters:  # one storage chunk of candidate_nll
        sizes["chunk_bytes"] = NLL_BYTES * m * min(CANDIDATE_CHUNK, n_union)
    need = _smallest_limit(_fits(plan_selection, **sizes))
    try:
        plan = at_cores(plan_selection(memory_limit=limit, **sizes))
    except PlanError as exc:
        return None, need, f"does not fit: {exc}", at_cores(plan_selection(memory_limit=UNBOUNDED, **sizes))
    return plan.projected_bytes, need, plan.describe(), plan


def project(
    calibration: Calibration,
    *,
    n_tokens: float,
    n_models: int,
    n_benchmarks: int,
    alpha: float | None = None,
    coefficients: str | Sequence[str] = "both",
    memory_limit: int | str | None = None,
    cores: int | None = None,
    device: str = "cpu",
    chunk_tokens: int | None = None,
    itemsize: int = 4,
    disk_bytes_per_s: float = DISK_BYTES_PER_S,
    gpu: DeviceFigures = H200,
) -> Projection:
    """Project wall time, disk and peak memory of a run from a :class:`Calibration`.

    Parameters
    ----------
    calibration
        Rates measured at ``n_models`` x ``n_benchmarks`` (:func:`calibrate`).
    n_tokens, n_models, n_benchmarks
        The run's store and score table.
    alpha, coefficients
        As for ``bsig screen`` (defaults: ``DEFAULTS.alpha``, both coefficients).
    memory_limit
        ``--memory-limit`` of screen and select (default ``DEFAULTS.memory_limit``).
    cores
        N: CPU cores, and the most concurrent tasks (default: this machine's CPU count).
    device
        ``cpu``, or ``gpu`` to add each screen pass on one GPU from ``gpu``'s stated figures.
    chunk_tokens, itemsize
        Store chunk width (default ``DEFAULTS.chunk_tokens``, capped at the tokens) and NLL bytes.
    disk_bytes_per_s
        Stated disk bandwidth, read and write.
    gpu
        Figures of the accelerator.

    Returns
    -------
    Projection

    Raises
    ------
    OptionError
        On bad sizes or options (:func:`check_run`), or a calibration made at other sizes.
    """
    d, m, B, alpha, coefs = check_run(
        n_tokens, n_models, n_benchmarks, DEFAULTS.alpha if alpha is None else alpha, coefficients,
    )
    check_choice(device, ("cpu", "gpu"), "device")
    if (calibration.models, calibration.benchmarks) != (m, B):
        raise OptionError(
            f"the calibration ran at {calibration.models} models x {calibration.benchmarks} benchmarks, not {m} x {B}; "
            "calibrate at the run's sizes"
        )
    limit = parse_memory(DEFAULTS.memory_limit if memory_limit is None else memory_limit)
    cores = int(cores if cores is not None else os.cpu_count() or 1)
    if cores < 1:
        raise OptionError(f"--workers must be an integer >= 1, got {cores}")
    chunk = min(int(chunk_tokens or DEFAULTS.chunk_tokens), d)
    k = K.tail_size(alpha, d)
    rate = calibration.rates
    disk = disk_sizes(
        n_tokens=d, n_models=m, n_benchmarks=B, alpha=alpha, coefficients=coefs, itemsize=itemsize,
        compression=calibration.compression,
    )
    codes = "both" if len(coefs) == 2 else coefs[0]
    per_token = {  # single-core seconds per token of each part of a screen pass
        "read": 1.0 / rate["read"],
        "codes": 1.0 / rate[codes],
        "histogram": sum(1.0 / rate[f"histogram_{c}"] for c in coefs),
        "tails": sum(1.0 / rate[f"tails_{c}"] for c in coefs),
    }
    gpu_parts = {
        "codes": ["ranks"] * ("thrush" in coefs) + list(coefs),
        "histogram": ["histogram"] * len(coefs),
        "tails": ["tails"] * len(coefs),
    }
    n_chunks = -(-d // chunk)
    C = len(coefs)
    sizes = dict(
        n_models=m, n_benchmarks=B, null_permutations=0, n_tokens=d, chunk_tokens=chunk, itemsize=int(itemsize),
        coefficients=coefs, k=k,
    )

    def wall(cpu_s: float, io_bytes: int, parallel: int) -> tuple[float, str]:
        cpu_wall, disk_wall = cpu_s / max(parallel, 1), io_bytes / disk_bytes_per_s
        return (cpu_wall, "cpu") if cpu_wall >= disk_wall else (disk_wall, "disk")

    stages: list[StageProjection] = []

    def screen_row(
        mode: str, step: str, work: str, parts: Sequence[str], written: int, memory: tuple[int | None, int, str],
    ) -> None:
        cpu = d * sum(per_token[p] for p in parts)
        wall_s, bound = wall(cpu, disk.store + written, cores)
        gpu_wall = gpu_bound = None
        if device == "gpu":
            # host read + decode on N cores, the host link and the device overlap: the slowest one sets the pace
            dev_s, dev_bound = _gpu_pass([q for p in parts if p != "read" for q in gpu_parts[p]], m, B, gpu)
            legs = {
                "read": d * per_token["read"] / cores,  # host read + decode
                "link": d * (m * itemsize + 8) / gpu.link_bytes_per_s,  # NLLs and token ids to the device
                dev_bound: d * dev_s,
                "disk": (disk.store + written) / disk_bytes_per_s,
            }
            gpu_bound = max(legs, key=lambda key: legs[key])
            gpu_wall = legs[gpu_bound]
        peak, need, text = memory
        stages.append(StageProjection(
            stage="screen", mode=mode, step=step, work=work, cpu_s=cpu, read_bytes=disk.store, write_bytes=written,
            wall_s=wall_s, bound=bound, peak_bytes=peak, need_bytes=need, plan=text, gpu_wall_s=gpu_wall,
            gpu_bound=gpu_bound,
        ))

    def merge_row(mode: str, items: int, spilled: int, memory: tuple[int | None, int, str]) -> None:
        # the driver folds and sorts the members and the candidate union (one core), then writes the output
        cpu = items / rate["sort"]
        wall_s, bound = wall(cpu, spilled + disk.screen_output, 1)
        peak, need, text = memory
        stages.append(StageProjection(
            stage="merge + write", mode=mode, step="", work="final tails, candidate union, output with candidate_nll",
            cpu_s=cpu, read_bytes=spilled,
            write_bytes=disk.screen_output, wall_s=wall_s, bound=bound, peak_bytes=peak, need_bytes=need, plan=text,
        ))

    one = _plan_screen(1, cores, limit, **sizes)
    two = _plan_screen(2, cores, limit, **sizes)
    screen_row("one pass", "pass 1/1", "read, codes, histograms, running tails, spill members and columns",
               ("read", "codes", "histogram", "tails"), disk.spill_one_pass, one)
    merge_row("one pass", disk.spill_members + disk.union, disk.spill_one_pass, one)
    screen_row("two passes", "pass 1/2", "read, codes, histograms", ("read", "codes", "histogram"), 0, two)
    screen_row("two passes", "pass 2/2", "read, codes, tail members, spill their columns", ("read", "codes", "tails"),
               disk.spill_two_pass, two)
    merge_row("two passes", C * B * 2 * k + disk.union, disk.spill_two_pass, two)

    # selection: one --screen-method, B independent benchmarks of at most 2k candidates
    n = min(2 * k, d)
    steps = max(m - 2, 1)
    peak, need, text, plan = _plan_select(cores, limit, m, n, B, disk.union)
    problems = m + 1
    batches = -(-problems // plan.fold_batch)
    setups = batches if plan.cache else batches * steps  # a streamed block is standardized again every step
    per_bench = n * (calibration.forward_setup_s * setups + calibration.forward_step_s * steps)
    workers = max(1, plan.workers)
    sel_read = B * n * NLL_BYTES * m
    cpu_wall = math.ceil(B / workers) * per_bench
    disk_wall = (sel_read + disk.signatures) / disk_bytes_per_s
    stages.append(StageProjection(
        stage="select", mode="both", step="", work=f"AIC + LOO-CV, {B} benchmarks x {n:,} candidates", cpu_s=B * per_bench,
        read_bytes=sel_read, write_bytes=disk.signatures, wall_s=max(cpu_wall, disk_wall),
        bound="cpu" if cpu_wall >= disk_wall else "disk", peak_bytes=peak, need_bytes=need, plan=text,
    ))

    assumptions = [
        f"CPU rates measured single-threaded on this machine ({calibration.machine}) at {m} models x {B} "
        f"benchmarks; read+decode and the kernels scale linearly with cores up to N = {cores} (chunks and "
        "numba blocks are independent), selection up to min(N, benchmarks, the memory plan's workers)",
        f"disk {disk_bytes_per_s / 1e9:.3g} GB/s read and write, stated (one NVMe SSD), not measured; a pass "
        "takes the longer of its CPU and its disk time",
        f"store compression {calibration.compression:.2f}x, measured on a synthetic pool; every other size is "
        "uncompressed (an upper bound)",
        f"one-pass spill: speculative tail boundaries admit about 1.2k + 4 sqrt(k) + 16 members, plus the first "
        f"64/alpha tokens, = {spill_members_per_tail(alpha, k, d):,} per benchmark and tail ({MEMBER_BYTES} B each) "
        "plus their NLL columns",
        f"selection: one --screen-method, {problems} fits per benchmark (LOO-CV), {steps} steps (delta = 0 runs to "
        "m - 2), 2k candidates per benchmark; merge: the driver sorts members and union at the measured "
        "rate on one core",
        f"chunks of {chunk:,} tokens ({n_chunks:,} chunks), float{8 * int(itemsize)} NLLs, no null permutations",
        "peak memory from the stages' own plans; a refused plan shows the smallest --memory-limit that fits, and its "
        "stage is timed as if the limit allowed N workers",
    ]
    if device == "gpu":
        fused, fused_bound = fused_gpu_rate(32, 88, gpu)
        assumptions.append(
            f"GPU: figures STATED, not measured ({gpu.source}); each screen pass runs the fused numba.cuda "
            "kernels (codes, histograms) and the portable tail collection on CuPy, roofline max(HBM bytes, FP64 "
            "products, FP32/INT32 elementwise ops) per token, overlapped with host read+decode on N cores, the host "
            "link and the disk (the slowest sets the pace); merge and selection stay on the CPU"
        )
        assumptions.append(
            f"GPU target: >= {GPU_TARGET_TOKENS_PER_S:.0e} tokens/s for the fused screening kernel on one "
            f"H100/H200-class GPU at 32 models x 88 benchmarks, both coefficients (projected from the stated "
            f"figures: {fused:.2g} tokens/s, {fused_bound}-bound); UNVERIFIED: no GPU was available, the kernel "
            "source is checked only under numba's CUDA simulator"
        )
    return Projection(
        n_tokens=d, n_models=m, n_benchmarks=B, alpha=alpha, k=k, coefficients=coefs, memory_limit=limit,
        cores=cores, device=device, chunk_tokens=chunk, itemsize=int(itemsize), disk_bytes_per_s=disk_bytes_per_s,
        disk=disk, stages=tuple(stages), calibration=calibration, assumptions=tuple(assumptions),
        gpu=gpu if device == "gpu" else None,
        passes_planned="passes" in inspect.signature(plan_screen).parameters,
    )


# ----------------------------------------------------------------------------- formatting


def format_size(n: float) -> str:
    """Binary size to three significant digits, up to PiB: ``1.75 GiB``, ``954 GiB``, ``0.98 TiB``."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        value = n / scale
        if abs(value) >= 0.975 or unit == "KiB" and abs(n) >= 1000:  # 1000 GiB reads better as 0.98 TiB
            digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """A duration in the largest fitting unit: ``0.4 s``, ``12 s``, ``3.5 min``, ``2.1 h``, ``4.0 d``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    for unit, scale, limit in (("min", 60, 120 * 60), ("h", 3600, 48 * 3600), ("d", 86400, 730 * 86400)):
        if seconds < limit:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds / (365.25 * 86400):.1f} y"


def format_rate(per_s: float, unit: str = "tok/s") -> str:
    """``2.21 M tok/s``."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {prefix} {unit}"
    return f"{per_s:.3g} {unit}"
