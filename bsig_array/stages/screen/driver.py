"""Screen driver: out-of-core Thrush and Pre-select with exact tail thresholds (docs/DESIGN.md §4, §5).

**One pass** over the perplexity store (the default): each store chunk is one task (:mod:`.tasks`)
on the stage task runner (:mod:`bsig_array.runtime.tasks`), with the block size and concurrency
that :func:`bsig_array.stages.screen.cost.plan_screen` derives from ``memory_limit``.  A task forms
every benchmark's integer codes (Thrush ``2γ``, Pre-select ``η·Z``), counts them on each
coefficient's exact lattice, and spills its tail members against the *running* boundaries: those of
the chunks folded so far (sent with each new task) tightened by the chunk's own.  A token behind the
``k``-th of any set of tokens can never be among the final ``k``, so the spill holds every final
member; about ``k·(1 + ln(d/k))`` per tail in all.  When the pass ends the summed histograms give the
exact boundaries (:func:`bsig_array.kernels.tail_bounds`), and the merge runs out of core:

1. *count* (parallel, one task per segment of chunks in token-id order): members beyond / at each
   final boundary;
2. *allocate* (driver): ties at a boundary go to the lowest ids, i.e. to the first segments;
3. *finalize* (parallel): each segment keeps its final members and the union of their columns;
4. *write* (driver + a pool of writer threads): segments in id order are appended to the output
   store chunk by chunk (:class:`~bsig_array.io.screen_output.ScreenStoreWriter`).

**Two passes** (``passes=2``, and automatically with label permutations, whose null counts need
the final boundaries): pass 1 only counts, pass 2 spills against the final boundaries and counts
the permuted rows; the merge is the same.  Both give the same result, bit for bit, for every
chunking, scheduler and worker count: histograms are sums, and tails are the first ``k`` in the
total order of (code, token id).  The output records which ran (``passes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bsig_array import kernels as K
from bsig_array.errors import InputError, OptionError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.chunks import ChunkSource, chunk_sources
from bsig_array.io.perplexity_store.schema import check_constant_rows
from bsig_array.io.provenance import make_record, performance_fingerprint, record_attrs, store_fingerprint
from bsig_array.io.scores import align_performance
from bsig_array.io.screen_output import (
    SCREEN_OUTPUT,
    ScreenStoreWriter,
    add_null_estimates,
    histogram_name,
    open_screen,
)
from bsig_array.io.zarr_format import strings
from bsig_array.options import (
    check_alpha,
    check_choice,
    check_count,
    resolve_coefficients,
)
from bsig_array.runtime.boundary import kernel_errors
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.device import resolve_device
from bsig_array.runtime.progress import Progress, Timer, Timings, phase
from bsig_array.runtime.run import RunSpec
from bsig_array.runtime.tasks import TaskRunner, describe_scheduler, task_runner
from bsig_array.schema import BENCHMARK, COEFFICIENT, COEFFICIENTS, MODEL, TAIL, TAILS, TIES, TOKEN
from bsig_array.stages.screen import accumulate
from bsig_array.stages.screen import spill as S
from bsig_array.stages.screen.cost import ScreenPlan, plan_screen
from bsig_array.stages.screen.merge import (
    allocate_ties,
    histogram_bins,
    null_exceedance,
    running_bounds,
    segments,
    speculative_bounds,
)
from bsig_array.stages.screen.tasks import ScanResult, ScreenJob, count_task, finalize_task, scan_task, verify_task

#: ``passes`` choices: one pass, two passes, or one unless label permutations need two.
PASSES = ("auto", "1", "2")

PRESELECT_SIGN = (
    "eta counts correctly ordered pairs (Eq. 2 as printed): a perfect predictor has eta = 1, so the high "
    "tail holds tokens whose NLL order agrees with the benchmark"
)


def permuted_scores(Y: np.ndarray, null_permutations: int, seed: int) -> np.ndarray:
    """Label-permuted copies of every benchmark row of ``Y`` (B, m): (N·B, m), permutation-major.

    Row ``r·B + b`` is benchmark ``b``'s scores under the ``r``-th random model permutation (one
    independent permutation per benchmark and copy, from ``numpy.random.default_rng(seed)``).
    """
    B, m = Y.shape
    rng = np.random.default_rng(seed)
    out = np.empty((null_permutations * B, m), dtype=Y.dtype)
    for r in range(null_permutations):
        for b in range(B):
            out[r * B + b] = Y[b, rng.permutation(m)]
    return out


def screen(
    nll: xr.DataArray,
    score: xr.DataArray,
    *,
    coefficients: str | Sequence[str] = COEFFICIENTS,
    alpha: float = DEFAULTS.alpha,
    ties: str = DEFAULTS.ties,
    null_permutations: int = 0,
    backend: str = "auto",
    store: str | os.PathLike | Location | None = None,
    out: str | os.PathLike | Location | None = None,
    overwrite: bool = False,
    passes: str | int = "auto",
    input_paths: Mapping[str, str | os.PathLike | None] | None = None,
    run: RunSpec | None = None,
) -> xr.Dataset:
    """Screen every token against every benchmark with exact tail thresholds.

    Parameters
    ----------
    nll
        ``nll (model, token)`` from :func:`bsig_array.io.perplexity_store.reader.open_store`
        (dask-backed; the store's token chunks are the unit of work) or an in-memory DataArray.
    score
        ``score (model, benchmark)``; matched to ``nll``'s models by name.
    coefficients
        ``"thrush"``, ``"preselect"``, ``"both"`` or a sequence of them.
    alpha
        Fraction kept per tail, in (0, 0.5); ``k = max(floor(alpha·d), 1)`` tokens per tail.
    ties
        Ranking of tied NLLs for Thrush: ``"average"`` (midranks) or ``"first"`` (store order, the
        paper repo's behaviour).  Pre-select counts tied pairs as 0 either way.
    null_permutations
        Label-permuted copies of each benchmark scored against the final boundaries (two passes);
        gives ``null_exceedances`` and ``null_fdr``.
    backend
        Kernel backend on CPU (``"auto"`` = numba; ``"numpy"`` = portable array-API code).
    store
        Path or URL of the perplexity store ``nll`` was opened from: its chunks are then read raw
        from the store, whole chunks as concurrent byte ranges on object storage (~3x faster than
        through xarray's decoding).  Ignored unless ``nll`` is that store's unmodified array.
    out
        Screen output to write, a path or URL (checked before any work; written atomically: on
        object storage staged locally and published, root ``zarr.json`` last).  Without it the
        result is returned in memory, which only suits results that fit.
    overwrite
        Replace an existing ``out``.
    passes
        ``"auto"`` (one pass, two with ``null_permutations``), ``1`` or ``2``.
    input_paths
        Paths the inputs were read from (``"performance"``, ``"metadata"``; ``"perplexity"``
        defaults to ``store``), recorded in the output's provenance (:mod:`bsig_array.io.provenance`).
    run
        The run's settings (:class:`~bsig_array.runtime.run.RunSpec`; default: the defaults in
        effect).  ``memory_limit`` becomes block sizes and concurrency
        (:func:`bsig_array.stages.screen.cost.plan_screen`; refused before running only when one store
        chunk cannot fit it); ``workers`` bounds concurrent chunks before that plan; ``scheduler``:
        tasks read the store themselves (a URL's storage options travel in each task) and write the
        spill (:class:`~.spill.ChunkSpill`: ``spill_dir``, else next to a local ``out``, else
        ``TMPDIR``), so workers must see that directory; ``device``: ``auto``, ``cpu`` or ``gpu``
        (CuPy); ``seed``: of the label permutations; ``progress``: one bar per pass and one for the
        merge.

    Returns
    -------
    xarray.Dataset
        The screen output (:mod:`bsig_array.io.screen_output`): opened lazily from ``out``, or loaded.

    Raises
    ------
    OptionError, InputError, PlanError
        Bad options; a store or score table that cannot be screened; a store chunk that cannot fit
        the memory limit.  All before any chunk is read, except damaged chunks, NaN/inf values and
        repeated token ids, which are named when they are read.
    """
    run = RunSpec.build() if run is None else run
    scheduler, workers, seed, progress = run.scheduler, run.workers, run.seed, run.progress
    coefficients = resolve_coefficients(coefficients)
    check_choice(ties, TIES, "ties rule", "(midranks, or store order as the paper repo)")
    device = resolve_device(run.device)
    null_permutations = check_count(null_permutations, "null permutations")
    alpha = check_alpha(alpha)
    n_passes = _check_passes(passes, null_permutations)
    target = None if out is None else check_new_output(out, overwrite=overwrite, what="screen output",
                                                       kind=SCREEN_OUTPUT, inputs=[store])
    if set(nll.dims) != {MODEL, TOKEN}:
        raise InputError(f"nll has dims {nll.dims}, expected (model, token)")
    nll = nll.transpose(MODEL, TOKEN)
    models = [str(m) for m in nll[MODEL].values]
    d = int(nll.sizes[TOKEN])
    if d < 2:
        raise InputError(f"the store has {d} token(s); screening needs at least 2")
    if len(models) > K.MAX_MODELS:
        raise InputError(
            f"the store has {len(models)} models; the screening kernels are exact for at most {K.MAX_MODELS} "
            "(integer codes in float32 products); screen a subset of the models"
        )
    k = K.tail_size(alpha, d)
    score = align_performance(score, models)
    Y = np.ascontiguousarray(score.values.T, dtype=np.float64)  # (B, m)
    B, m = Y.shape
    provenance = make_record(
        "screen", inputs={"perplexity": store, **(input_paths or {})},
        fingerprints={"perplexity": store_fingerprint(nll), "performance": performance_fingerprint(score)},
        options=dict(coefficients=list(coefficients), alpha=float(alpha), ties=ties, null_permutations=null_permutations,
                     passes=str(passes), **run.record(), resolved_device=device),
    )

    sources = chunk_sources(nll, store=store)
    widest = max(s.stop - s.start for s in sources)
    if not isinstance(scheduler, str):
        max_workers = workers or sum(scheduler.nthreads().values())
    else:
        max_workers = 1 if scheduler == "synchronous" else workers
    plan = plan_screen(
        n_models=m, n_benchmarks=B, null_permutations=null_permutations, n_tokens=d, chunk_tokens=widest,
        itemsize=nll.dtype.itemsize, coefficients=coefficients, k=k, memory_limit=run.memory_limit,
        max_workers=max_workers, passes=n_passes,
    )
    job = ScreenJob(
        coefficients=coefficients, Y=Y, Y_null=permuted_scores(Y, null_permutations, seed), ties=ties,
        block_tokens=plan.block_tokens, backend="cupy" if device == "gpu" else backend,
        models=tuple(models), path=str(as_location(store)) if store else "store",  # messages: no credentials
        k=k, block_members=plan.block_members, n_tokens=d,
        threads=max(1, (os.cpu_count() or 1) // plan.workers) if isinstance(scheduler, str) else 0,
    )
    bench_coords = {str(name): c for name, c in score.coords.items() if c.dims == (BENCHMARK,)}
    timer = Timings()  # this run's phase times, recorded in the output's ``timings`` attribute
    spill = S.ChunkSpill(near=target, spill_dir=run.spill_dir)
    try:
        job = dataclasses.replace(job, spill=spill.path)
        with task_runner(scheduler, plan.workers) as runner, kernel_errors("screening"):
            if n_passes == 1:
                scan = _scan(runner, sources, job, d, timer, progress, "screen (one pass: histograms + tails)")
                hist = scan.hist
                bounds = {c: K.tail_bounds(hist[c], k, c, m) for c in coefficients}
                reread = _repair(runner, sources, dataclasses.replace(job, count=False, bounds=bounds), timer, progress)
            else:
                first = _scan(runner, sources, dataclasses.replace(job, collect=False), d, timer, progress,
                              "screen pass 1/2 (histograms)")
                hist = first.hist
                bounds = {c: K.tail_bounds(hist[c], k, c, m) for c in coefficients}
                scan = _scan(runner, sources, dataclasses.replace(job, count=False, bounds=bounds), d, timer,
                             progress, "screen pass 2/2 (tails)")
                reread = 0
            spans = scan.spans
            summary = _summary(models, bench_coords, coefficients, hist, bounds, m)
            if null_permutations:
                exceed = np.stack([
                    null_exceedance(scan.null[c], hist[c], bounds[c], c, m, null_permutations) for c in coefficients
                ])
                summary = add_null_estimates(summary, exceed, k)
            summary.attrs.update(
                alpha=float(alpha), ties=ties, n_tokens=d, k=k, coefficients=list(coefficients),
                null_permutations=null_permutations, seed=int(seed), device=device,
                scheduler=describe_scheduler(scheduler), memory_limit=plan.memory_limit, plan=plan.describe(),
                workers=plan.workers, passes=n_passes, preselect_sign=PRESELECT_SIGN,
                spill_bytes=int(scan.spilled), reread_chunks=int(reread),
                **record_attrs(provenance),
            )
            result = _merge(runner, sources, spill, job, bounds, spans, summary, plan, target, timer, progress)
    finally:
        spill.remove()
    return result


def _check_passes(passes: str | int, null_permutations: int) -> int:
    text = str(passes)
    check_choice(text, PASSES, "number of passes", "(auto: one pass, two with --null-permutations)")
    if text == "1" and null_permutations:
        raise OptionError(
            "label permutations are counted against the final boundaries, which needs two passes; "
            "use --passes 2 (or auto) with --null-permutations"
        )
    return 2 if text == "2" or (text == "auto" and null_permutations) else 1


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What one pass over the store leaves the driver (:func:`_scan`)."""

    hist: dict[str, np.ndarray]  # summed host histograms (B, bins) per coefficient; empty if the pass only collects
    null: dict[str, np.ndarray]  # per coefficient (N·B, 4) null-row counts beyond / at the observed boundaries
    spans: list[tuple[int, int, int, bool]]  # per chunk: start, lowest and highest token id, ids increasing
    spilled: int  # bytes the pass wrote to the spill


def _scan(
    runner: TaskRunner, sources: list[ChunkSource], job: ScreenJob, d: int, timer: Timer, progress: Progress,
    title: str,
) -> PassResult:
    """One pass over the store: summed histograms and null counts, chunk id spans, spilled bytes.

    In the one-pass screen (``job.count`` and ``job.collect``) each task is sent the running
    boundaries of the histograms folded so far, so later chunks spill fewer members.  Tasks in this
    process add their histograms to the pass's sums where they were formed (:mod:`.accumulate`: on
    the GPU they never leave it until the pass ends); others return them to be folded here.  The
    pass's phase times go to ``timer``.
    """
    if not (job.count and runner.in_process):
        return _fold(runner, sources, job, d, timer, progress, title, None)
    with accumulate.PassHistograms() as sums:
        return _fold(runner, sources, job, d, timer, progress, title, sums)


def _fold(
    runner: TaskRunner, sources: list[ChunkSource], job: ScreenJob, d: int, timer: Timer, progress: Progress,
    title: str, sums: accumulate.PassHistograms | None,
) -> PassResult:
    """:func:`_scan`'s pass, given the in-process sums the tasks add to (``None``: they return theirs)."""
    t_pass = time.perf_counter()
    m = job.Y.shape[1]
    running = job.count and job.collect
    label = f"pass{'' if running else ('1' if job.count else '2')}"
    hist: dict[str, np.ndarray] = {}
    null = {c: np.zeros((job.Y_null.shape[0], 4), dtype=np.int64) for c in job.coefficients}
    current = dict(job.bounds)
    guess: dict[str, K.TailBounds] = {}
    spans: list[tuple[int, int, int, bool]] = []
    spilled = 0
    lo, hi = np.full(m, np.inf), np.full(m, -np.inf)  # each model's NLL range (a constant row is refused)

    def arguments() -> Any:
        for src in sources:  # built lazily: each task gets the boundaries known when it starts
            yield (src, dataclasses.replace(job, bounds=dict(current), speculative=dict(guess)) if running else job,
                   sums)  # the live sums only to tasks in this process (None for the others)

    def refresh(coef: str, h: Any) -> None:
        for into, bounds in ((current, running_bounds(h, job.k, coef, m)),
                             (guess, speculative_bounds(h, job.k, d, coef, m))):
            if bounds is not None:
                into[coef] = bounds

    with progress(title, total=d, unit="tokens") as bar:
        res: ScanResult
        for res in runner.imap_unordered(scan_task, arguments()):
            t0 = time.perf_counter()
            for coef, h in res.hist.items():
                if coef in hist:
                    hist[coef] += h
                else:
                    hist[coef] = h.astype(np.int64, copy=True)
                if running:
                    refresh(coef, hist[coef])
            if running and sums is not None:
                sums.read(refresh)
            for coef, n in res.null.items():
                null[coef] += n
            spans.append(res.span)
            np.minimum(lo, res.nll_range[0], out=lo)
            np.maximum(hi, res.nll_range[1], out=hi)
            spilled += res.spilled
            for key, val in res.times.items():
                timer.add(f"scan_{key}_s", val)
                timer.add(f"{label}_{key}_s", val)  # per pass (--profile)
            timer.add("driver_fold_s", time.perf_counter() - t0)
            bar.advance(res.tokens)
    if sums is not None:
        if sums.chunks != len(sources):  # every task adds exactly once; anything else is a bug, never a result
            raise RuntimeError(f"{sums.chunks} of {len(sources)} chunks were counted")
        hist = sums.host()
    timer.add(f"{label}_s", time.perf_counter() - t_pass)
    check_constant_rows(lo, hi, job.models, path=job.path)
    return PassResult(hist=hist, null=null, spans=spans, spilled=spilled)


def _repair(
    runner: TaskRunner, sources: list[ChunkSource], job: ScreenJob, timer: Timer, progress: Progress,
) -> int:
    """Read again, against the final boundaries, the chunks whose speculative boundaries cut too tight.

    Their spill is replaced; returns how many chunks were read again (0 unless the store's order
    shifts the score distribution, see :func:`~bsig_array.stages.screen.merge.speculative_bounds`).
    """
    with phase(timer, "repair_s"):
        starts = [s for s in runner.imap_unordered(_indexed, [(verify_task, 0, job.spill, src.start, job.bounds)
                                                              for src in sources])]
        redo = [src for src in sources if src.start in {s for _, s in starts if s is not None}]
        if redo:
            with progress("screen: re-reading chunks cut too tight", total=sum(s.stop - s.start for s in redo),
                          unit="tokens") as bar:
                for res in runner.imap_unordered(scan_task, [(src, job) for src in redo]):
                    bar.advance(res.tokens)
    return len(redo)


def _summary(
    models: list[str], bench_coords: dict[str, xr.DataArray], coefficients: Sequence[str],
    hist: dict[str, np.ndarray], bounds: dict[str, K.TailBounds], m: int,
) -> xr.Dataset:
    """The small part of the output: coordinates, thresholds and histograms."""
    threshold = np.empty((len(coefficients), len(next(iter(hist.values()))), 2), dtype=np.float64)
    for i, coef in enumerate(coefficients):
        scale = K.code_scale(coef, m)
        threshold[i, :, 0] = bounds[coef].low_code / scale
        threshold[i, :, 1] = bounds[coef].high_code / scale
    coords: dict[str, Any] = {
        name: (BENCHMARK, strings(c.values) if c.dtype.kind in "OUS" else c.values) for name, c in bench_coords.items()
    }
    ds = xr.Dataset(
        {"threshold": ((COEFFICIENT, BENCHMARK, TAIL), threshold)},
        coords={COEFFICIENT: strings(coefficients), TAIL: strings(TAILS), MODEL: strings(models), **coords},
    )
    for coef in coefficients:
        ds[histogram_name(coef)] = ((BENCHMARK, f"{coef}_bin"), hist[coef])
        ds = ds.assign_coords({f"{coef}_bin": histogram_bins(coef, m)})
        ds[histogram_name(coef)].attrs["description"] = (
            "exact counts of gamma over its half-integer lattice" if coef == "thrush" else "exact counts of eta*Z over 0..Z"
        )
    return ds


def _merge(
    runner: TaskRunner, sources: list[ChunkSource], spill: S.ChunkSpill, job: ScreenJob,
    bounds: dict[str, K.TailBounds], spans: list[tuple[int, int, int, bool]], summary: xr.Dataset,
    plan: ScreenPlan, target: Path | Location | None, timer: Timings, progress: Progress,
) -> xr.Dataset:
    """Exact tails from the spill, written to ``target`` (or returned in memory) in token-id order.

    The merge's phase times go to ``timer``, the run's recorder, whose sums are then written with
    the output as its ``timings`` attribute.
    """
    t0 = time.perf_counter()
    segs = segments(spans)
    by_start = {src.start: src for src in sources}
    budget = job.block_members
    with progress("screen merge (count, finalize, write)", total=2 * len(segs) + 1, unit="steps") as bar:
        counts: list[dict[str, np.ndarray]] = [{} for _ in segs]
        for i, res in runner.imap_unordered(_indexed, [(count_task, i, spill.path, seg, bounds, budget)
                                                       for i, seg in enumerate(segs)]):
            counts[i] = res
            bar.advance(1)
        takes: list[dict[str, np.ndarray]] = [{} for _ in segs]
        for coef, b in bounds.items():
            per_segment, _ = allocate_ties([c[coef] for c in counts], b)
            for i, t in enumerate(per_segment):
                takes[i][coef] = t
        sizes = [0] * len(segs)
        finalize_args = [
            (finalize_task, i, spill.path, i, seg, [by_start[s].stop - s for s in seg],
             [by_start[s] for s in seg] if len(seg) > 1 else None, bounds, takes[i], budget)
            for i, seg in enumerate(segs)
        ]
        for i, size in runner.imap_unordered(_indexed, finalize_args):
            sizes[i] = size
            bar.advance(1)
        timer.add("merge_finalize_s", time.perf_counter() - t0)
        t1 = time.perf_counter()
        tmp = None if target is not None else tempfile.mkdtemp(prefix=".bsig-screen-", dir=spill.path)
        with atomic_output(target) if target is not None else contextlib.nullcontext(Path(str(tmp))) as path:
            writer = ScreenStoreWriter(
                path, summary, k=job.k, n_candidates=sum(sizes),
                threads=max(2, plan.workers),  # writes overlap I/O with compression even at one worker
            )
            try:
                _write_output(writer, spill.path, segs, sizes, list(bounds), job, bar)
                writer.wait()
                timer.add("merge_write_s", time.perf_counter() - t1)
                timer.add("merge_s", time.perf_counter() - t0)
                writer.close({**summary.attrs, "timings": timer.rounded(4)})
            except BaseException:
                writer.abort()
                raise
    return open_screen(target) if target is not None else open_screen(str(tmp)).load()


def _indexed(fn: Any, i: int, *args: Any) -> tuple[int, Any]:
    return i, fn(*args)


def _write_output(
    writer: ScreenStoreWriter, spill: str, segs: list[list[int]], sizes: list[int], coefficients: list[str],
    job: ScreenJob, bar: Any,
) -> None:
    """Write the output chunk by chunk on the writer's threads: the candidate axis with its NLL
    columns, and every coefficient's tails gathered from the segments' kept members in id order."""
    m = job.Y.shape[1]
    offsets = np.cumsum([0, *sizes])
    for a in range(0, int(offsets[-1]), writer.cand_chunk):
        b = min(a + writer.cand_chunk, int(offsets[-1]))
        writer.write_candidates(a, b, functools.partial(_gather_candidates, spill, segs, offsets, a, b, m))
    for ci, coef in enumerate(coefficients):
        # per segment, where each tail's kept members start in its file, and their ranks in the tail
        counts = np.stack([
            np.diff(S.member_ptr(spill, f"seg{i}", coef, kept=True), axis=1).sum(axis=0) for i in range(len(segs))
        ])
        starts = np.zeros((len(segs), counts.shape[1] + 1), dtype=np.int64)
        np.cumsum(counts, axis=1, out=starts[:, 1:])
        ranks = np.zeros((len(segs) + 1, counts.shape[1]), dtype=np.int64)
        np.cumsum(counts, axis=0, out=ranks[1:])
        for block in writer.tail_blocks():
            writer.write_tails(ci, block, functools.partial(
                _gather_tails, spill, coef, starts, ranks, offsets, K.code_scale(coef, m), block,
            ))
    bar.advance(1)


def _gather_tails(
    spill: str, coef: str, starts: np.ndarray, ranks: np.ndarray, offsets: np.ndarray, scale: float,
    block: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, scores and candidate columns of tails ``b0:b1`` at ranks ``r0:r1`` of one coefficient.

    A tail's members are its segments' kept members in segment (token-id) order; ``ranks[i, q]``
    is where segment ``i``'s members of tail ``q`` begin and ``starts[i, q]`` where they sit in its
    kept files.  One segment's files are open at a time (mapped pages count as resident memory).
    """
    b0, b1, r0, r1 = block
    token = np.full((b1 - b0, 2, r1 - r0), -1, dtype=np.int64)
    score = np.zeros(token.shape, dtype=np.float64)
    column = np.full(token.shape, -1, dtype=np.int64)
    keys = np.arange(2 * b0, 2 * b1)
    for i in range(len(ranks) - 1):
        lo = np.maximum(ranks[i, keys], r0)
        hi = np.minimum(ranks[i + 1, keys], r1)
        if not np.any(hi > lo):
            continue
        tok, code = S.read_kept(spill, i, coef)
        u = S.read_union(spill, i)
        for q, a, e in zip(keys[hi > lo].tolist(), lo[hi > lo].tolist(), hi[hi > lo].tolist()):
            at = slice(int(starts[i, q]) + a - int(ranks[i, q]), int(starts[i, q]) + e - int(ranks[i, q]))
            local = np.array(tok[at])
            up = np.array(u["upos"][local])
            dest = (q // 2 - b0, q % 2, slice(a - r0, e - r0))
            token[dest] = u["union"][up]
            score[dest] = np.array(code[at]) / scale
            column[dest] = offsets[i] + up
        del tok, code, u
    if (token < 0).any():
        raise ValueError(f"{coef} tails of benchmarks {b0}:{b1} at ranks {r0}:{r1} are not complete")
    return token, score, column


def _gather_candidates(
    spill: str, segs: list[list[int]], offsets: np.ndarray, a: int, b: int, m: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and float32 NLL columns of candidates ``a:b`` from the segments' spilled columns."""
    ids = np.empty(b - a, dtype=np.int64)
    nll = np.empty((m, b - a), dtype=np.float32)
    first = int(np.searchsorted(offsets, a, side="right")) - 1
    for i in range(first, len(segs)):
        lo, hi = max(a, int(offsets[i])), min(b, int(offsets[i + 1]))
        if lo >= b:
            break
        if hi <= lo:
            continue
        u = S.read_union(spill, i)
        rng = slice(lo - int(offsets[i]), hi - int(offsets[i]))
        ids[lo - a : hi - a] = u["union"][rng]
        src, pos = np.array(u["src"][rng]), np.array(u["pos"][rng])
        del u
        for j in np.unique(src):
            at = np.flatnonzero(src == j)
            cols = S.read_columns(spill, segs[i][j])
            nll[:, lo - a + at] = cols[:, pos[at]]
            del cols  # unmap: mapped pages count as resident memory
    return ids, nll
