"""Run projection: a run's wall time, disk and peak memory for every stage and pass (``bsig plan``).

:func:`project` turns a :class:`~bsig_array.diagnostics.calibration.Calibration` into wall time,
disk and peak memory for every stage and pass of a run of any size: the screen in one pass (with its
spill) and the two-pass fallback, the merge and output write, and selection.  Memory comes from the
stages' own cost models on the generic planner (:class:`~bsig_array.stages.screen.cost.ScreenCost`,
:class:`~bsig_array.stages.select_cost.SelectCost`, :func:`~bsig_array.runtime.memory.fit`,
docs/DESIGN.md §5), so a projection refuses exactly what the run would refuse; disk from
:mod:`.disk`, GPU figures from :mod:`.devices`.

The scaling assumptions are part of the result (:attr:`Projection.assumptions`): CPU work scales
linearly with cores up to N, a pass takes the longer of its CPU and its disk time at a stated disk
bandwidth, and the GPU figures are a datasheet's, not measurements.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bsig_array import kernels as K
from bsig_array.diagnostics.calibration import Calibration
from bsig_array.diagnostics.devices import GPU_TARGET_TOKENS_PER_S, H200, DeviceFigures, roofline
from bsig_array.diagnostics.disk import DISK_BYTES_PER_S, DiskSizes, disk_sizes
from bsig_array.errors import OptionError, PlanError
from bsig_array.io.screen_output import CANDIDATE_CHUNK, CANDIDATE_NLL_BYTES
from bsig_array.options import check_alpha, resolve_coefficients
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.memory import CostModel, PlanT, fit, smallest_limit
from bsig_array.runtime.run import RunSpec
from bsig_array.schema import MIN_MODELS
from bsig_array.stages.screen.cost import SPILLED_MEMBER_BYTES, ScreenCost, gpu_token_cost, spill_members_per_tail
from bsig_array.stages.select_cost import SelectCost, read_bytes

#: A limit no plan reaches: the plan a refused stage would run with, for its time.
UNBOUNDED = 1 << 62


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
    #: whether the screen's plan is made for each screen mode separately (always, now; kept in the JSON)
    passes_planned: bool = True

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



# ----------------------------------------------------------------------------- GPU


def fused_gpu_rate(m: int, B: int, gpu: DeviceFigures) -> tuple[float, str]:
    """Projected tokens/s (and bound) of the fused kernel alone, both coefficients, from stated figures."""
    parts = ["ranks", "thrush", "preselect", "histogram", "histogram", "tail test", "tail test"]
    seconds, bound = _gpu_pass(parts, m, B, gpu)
    return 1.0 / seconds, bound


def _gpu_pass(parts: Sequence[str], m: int, B: int, gpu: DeviceFigures) -> tuple[float, str]:
    """Seconds per token on the device (the screen's costs per token on the device's roofline)."""
    hbm = fp64 = fp32 = 0.0
    for part in parts:
        a, b, c = gpu_token_cost(part, m, B)
        hbm, fp64, fp32 = hbm + a, fp64 + b, fp32 + c
    return roofline(hbm, fp64, fp32, gpu)


# ----------------------------------------------------------------------------- projection


def _memory(cost: CostModel[PlanT], cores: int, limit: int) -> tuple[PlanT | None, int, str]:
    """(plan or None, smallest limit that fits, description or refusal) of a stage's plan at ``cores`` workers."""
    need = smallest_limit(cost, cores)
    try:
        plan = fit(cost, limit, cores)
    except PlanError as exc:
        return None, need, f"does not fit: {exc}"
    return plan, need, plan.describe()


def project(
    calibration: Calibration,
    *,
    n_tokens: float,
    n_models: int,
    n_benchmarks: int,
    alpha: float = DEFAULTS.alpha,
    coefficients: str | Sequence[str] = "both",
    run: RunSpec | None = None,
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
    run
        The run to project (:class:`~bsig_array.runtime.run.RunSpec`; default: the defaults in
        effect): its ``memory_limit`` for screen and select; ``workers`` = N, the CPU cores and the
        most concurrent tasks (default: this machine's CPU count); ``device`` ``gpu`` adds each
        screen pass on one GPU from ``gpu``'s stated figures (``auto`` and ``cpu`` project the CPU).
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
    run = RunSpec.build() if run is None else run
    d, m, B, alpha, coefs = check_run(n_tokens, n_models, n_benchmarks, alpha, coefficients)
    device = "gpu" if run.device == "gpu" else "cpu"
    if (calibration.models, calibration.benchmarks) != (m, B):
        raise OptionError(
            f"the calibration ran at {calibration.models} models x {calibration.benchmarks} benchmarks, not {m} x {B}; "
            "calibrate at the run's sizes"
        )
    limit = run.memory_limit
    cores = int(run.workers or os.cpu_count() or 1)
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

    def screen_memory(passes: int) -> tuple[int | None, int, str]:
        """The screen's plan for one mode, from its own cost model."""
        cost = ScreenCost(
            n_models=m, n_benchmarks=B, null_permutations=0, n_tokens=d, chunk_tokens=chunk, itemsize=int(itemsize),
            coefficients=coefs, passes=passes,
        )
        plan, need, text = _memory(cost, cores, limit)
        return (None if plan is None else plan.projected_bytes), need, text

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

    one = screen_memory(1)
    two = screen_memory(2)
    screen_row("one pass", "pass 1/1", "read, codes, histograms, running tails, spill members and columns",
               ("read", "codes", "histogram", "tails"), disk.spill_one_pass, one)
    merge_row("one pass", disk.spill_members + disk.union, disk.spill_one_pass, one)
    screen_row("two passes", "pass 1/2", "read, codes, histograms", ("read", "codes", "histogram"), 0, two)
    screen_row("two passes", "pass 2/2", "read, codes, tail members, spill their columns", ("read", "codes", "tails"),
               disk.spill_two_pass, two)
    merge_row("two passes", C * B * 2 * k + disk.union, disk.spill_two_pass, two)

    # selection: one coefficient (--coefficients), B independent benchmarks of at most 2k candidates
    n = min(2 * k, d)
    steps = max(m - 2, 1)
    # as ``bsig select`` plans it: the driver holds nothing per candidate (each task reads its own
    # candidate lists), one read spans storage chunks of candidate_nll; a refused plan is timed as the
    # plan with memory enough for N workers
    select_cost = SelectCost(
        m=m, n_max=n, n_tasks=B, chunk_bytes=read_bytes(m, disk.union, CANDIDATE_CHUNK, CANDIDATE_NLL_BYTES),
    )
    fitted, need, text = _memory(select_cost, cores, limit)
    plan = fitted if fitted is not None else fit(select_cost, UNBOUNDED, cores)
    peak = None if fitted is None else fitted.projected_bytes
    problems = m + 1
    batches = -(-problems // plan.fold_batch)
    setups = batches if plan.cache else batches * steps  # a streamed block is standardized again every step
    per_bench = n * (calibration.forward_setup_s * setups + calibration.forward_step_s * steps)
    workers = max(1, plan.workers)
    sel_read = B * n * CANDIDATE_NLL_BYTES * m
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
        f"64/alpha tokens, = {spill_members_per_tail(alpha, k, d):,} per benchmark and tail ({SPILLED_MEMBER_BYTES} B each) "
        "plus their NLL columns",
        f"selection: one coefficient (--coefficients), {problems} fits per benchmark (LOO-CV), {steps} steps (delta = 0 runs to "
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
    )

