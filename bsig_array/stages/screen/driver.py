"""Screen driver: out-of-core Thrush and Pre-select with exact tail thresholds (docs/DESIGN.md §4, §5).

Two streaming passes over the perplexity store, each a set of independent per-chunk tasks
(:mod:`.tasks`) run on the stage task runner (:mod:`bsig_array.runtime.tasks`) with the block size
and concurrency that :func:`bsig_array.runtime.memory.plan_screen` derives from ``memory_limit``:

1. **histograms**: every chunk's integer codes (Thrush ``2γ``, Pre-select ``η·Z``) for all
   benchmarks at once are counted on each coefficient's exact lattice; the summed histograms give
   the exact tail boundaries (:func:`bsig_array.kernels.tail_bounds`);
2. **tails**: every chunk's members strictly beyond a boundary, and the lowest token ids *at* it,
   are merged across chunks (:mod:`.merge`) into exactly ``k = max(floor(alpha·d), 1)`` tokens per
   tail; label-permuted copies of each benchmark (``null_permutations``) are scored in the same
   pass and counted against the observed boundaries.

The result never depends on chunking or scheduling: histograms are sums, tails are order-free
merges with a token-id tie-break.  Pass 2 also hands back the NLL columns of every chunk's tail
members (it holds the decompressed chunk anyway); the driver spills them to a temporary directory
(:mod:`.spill`), so ``candidate_nll`` is a lazy gather of the final candidates from that spill,
never a third read of the store.  The output's schema and writer are
:mod:`bsig_array.io.screen_output`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from bsig_array import kernels as K
from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.chunks import ChunkSource, check_unique, chunk_sources
from bsig_array.io.scores import align_performance
from bsig_array.io.screen_output import add_null_estimates, build_screen
from bsig_array.options import check_alpha, check_choice, check_count, resolve_coefficients
from bsig_array.runtime.boundary import kernel_errors
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.device import resolve_device
from bsig_array.runtime.memory import plan_screen
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.runtime.tasks import TaskRunner, check_scheduler, describe_scheduler, task_runner
from bsig_array.schema import BENCHMARK, COEFFICIENTS, MODEL, TIES, TOKEN
from bsig_array.stages.screen.merge import (
    TailAccumulator,
    candidate_union,
    final_tails,
    histogram_bins,
    null_exceedance,
)
from bsig_array.stages.screen.spill import ColumnSpill
from bsig_array.stages.screen.tasks import ScreenJob, histogram_task, tails_task

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
    memory_limit: str | int = DEFAULTS.memory_limit,
    scheduler: Any = DEFAULTS.scheduler,
    device: str = DEFAULTS.device,
    null_permutations: int = 0,
    seed: int = DEFAULTS.seed,
    workers: int | None = None,
    backend: str = "auto",
    store: str | os.PathLike | None = None,
    progress: Progress = no_progress,
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
    memory_limit
        Peak-memory promise (e.g. ``"2GiB"``), turned into block size and concurrency by
        :func:`bsig_array.runtime.memory.plan_screen`; a plan that cannot fit is refused before running.
    scheduler
        ``"threads"``, ``"processes"``, ``"synchronous"``, a dask.distributed address, or a
        ``distributed.Client``.
    device
        ``"auto"``, ``"cpu"`` or ``"gpu"`` (CuPy).
    null_permutations
        Label-permuted copies of each benchmark scored in pass 2; gives ``null_exceedances`` and
        ``null_fdr``.
    seed
        Seed of the permutations.
    workers
        Upper bound on concurrent tasks (default: CPU count, lowered by the memory plan).
    backend
        Kernel backend on CPU (``"auto"`` = numba; ``"numpy"`` = portable array-API code).
    store
        Path of the perplexity store ``nll`` was opened from: its chunks are then read raw from the
        store (~3x faster than through xarray's decoding).  Ignored unless ``nll`` is that store's
        unmodified array.
    progress
        Receives one bar per pass (see :mod:`bsig_array.runtime.progress`).

    Returns
    -------
    xarray.Dataset
        The screen output (:mod:`bsig_array.io.screen_output`); ``candidate_nll`` is a lazy gather
        (write it with :func:`~bsig_array.io.screen_output.write_screen`).

    Raises
    ------
    OptionError, InputError, PlanError
        Bad options; a store or score table that cannot be screened; a plan that cannot fit the
        memory limit.  All before any chunk is read, except damaged chunks and NaN/inf values,
        which are named when they are read.
    """
    coefficients = resolve_coefficients(coefficients)
    check_choice(ties, TIES, "ties rule", "(midranks, or store order as the paper repo)")
    check_scheduler(scheduler)
    device = resolve_device(device)
    null_permutations = check_count(null_permutations, "null permutations")
    alpha = check_alpha(alpha)
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

    sources = chunk_sources(nll, store=store)
    widest = max(s.stop - s.start for s in sources)
    if not isinstance(scheduler, str):
        max_workers = workers or sum(scheduler.nthreads().values())
    else:
        max_workers = 1 if scheduler == "synchronous" else workers
    plan = plan_screen(
        n_models=m, n_benchmarks=B, null_permutations=null_permutations, n_tokens=d, chunk_tokens=widest,
        itemsize=nll.dtype.itemsize, coefficients=coefficients, k=k, memory_limit=memory_limit, max_workers=max_workers,
    )
    job = ScreenJob(
        coefficients=coefficients, Y=Y, Y_null=permuted_scores(Y, null_permutations, seed), ties=ties,
        block_tokens=plan.block_tokens, backend="cupy" if device == "gpu" else backend,
        models=tuple(models), path=str(store or "store"),
        threads=max(1, (os.cpu_count() or 1) // plan.workers) if isinstance(scheduler, str) else 0,
    )

    timings: dict[str, float] = {}
    spill = ColumnSpill()
    try:
        with task_runner(scheduler, plan.workers) as runner, kernel_errors("screening"):
            t0 = time.perf_counter()
            hist, id_range = _run_pass1(runner, sources, job, d, timings, progress)
            timings["pass1_s"] = time.perf_counter() - t0
            bounds = {c: K.tail_bounds(hist[c], k, c, m) for c in coefficients}
            job = dataclasses.replace(job, bounds=bounds)
            t0 = time.perf_counter()
            folded = _run_pass2(runner, sources, job, d, timings, spill, id_range, progress)
            timings["pass2_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        token, cand_score, threshold = final_tails(folded.parts(), bounds, m, k)
        union = candidate_union(token, id_range)
        if id_range is None:
            check_unique(sources, union)
        ds = build_screen(
            models=models,
            benchmark_coords={str(name): c for name, c in score.coords.items() if c.dims == (BENCHMARK,)},
            coefficients=coefficients, token=token, score=cand_score, threshold=threshold,
            histograms={c: (histogram_bins(c, m), hist[c]) for c in coefficients},
            candidate=union, candidate_nll=spill.gather(union, m),
        )
        timings["merge_s"] = time.perf_counter() - t0
    except BaseException:
        spill.remove()
        raise
    if null_permutations:
        exceed = np.stack([
            null_exceedance(folded.null[c], hist[c], bounds[c], c, m, null_permutations) for c in coefficients
        ])
        ds = add_null_estimates(ds, exceed, k)
    ds.attrs.update(
        alpha=float(alpha), ties=ties, n_tokens=d, k=k, coefficients=list(coefficients),
        null_permutations=null_permutations, seed=int(seed), device=device, scheduler=describe_scheduler(scheduler),
        memory_limit=plan.memory_limit, plan=plan.describe(), workers=plan.workers,
        timings={key: round(val, 4) for key, val in timings.items()}, preselect_sign=PRESELECT_SIGN,
    )
    return ds


def _run_pass1(
    runner: TaskRunner, sources: list[ChunkSource], job: ScreenJob, d: int, timings: dict[str, float],
    progress: Progress,
) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
    """Summed histograms, and the range of the token ids when they are provably unique (increasing
    along the store), else ``None``."""
    hist: dict[str, np.ndarray] = {}
    spans = []
    with progress("screen pass 1/2 (histograms)", total=d, unit="tokens") as bar:
        for res in runner.imap_unordered(histogram_task, [(s, job) for s in sources]):
            for coef, h in res["hist"].items():
                if coef in hist:
                    hist[coef] += h
                else:
                    hist[coef] = h.astype(np.int64, copy=True)
            spans.append(res["ids"])
            _add_times(timings, res["times"], "pass1")
            bar.advance(res["tokens"])
    spans.sort()
    unique = all(inc for *_, inc in spans) and all(a[2] < b[1] for a, b in zip(spans, spans[1:]))
    return hist, (spans[0][1], spans[-1][2]) if unique else None


def _run_pass2(
    runner: TaskRunner, sources: list[ChunkSource], job: ScreenJob, d: int, timings: dict[str, float],
    spill: ColumnSpill, id_range: tuple[int, int] | None, progress: Progress,
) -> TailAccumulator:
    """Pass 2: every chunk's tail members and null counts folded as they arrive; member columns spilled."""
    folded = TailAccumulator(job.bounds, job.Y_null.shape[0], id_range)
    with progress("screen pass 2/2 (tails)", total=d, unit="tokens") as bar:
        for res in runner.imap_unordered(tails_task, [(s, job) for s in sources]):
            t0 = time.perf_counter()
            spill.add(*res.pop("columns"))
            timings["pass2_spill_s"] = timings.get("pass2_spill_s", 0.0) + time.perf_counter() - t0
            folded.add(res["members"], res["null"])
            _add_times(timings, res["times"], "pass2")
            bar.advance(res["tokens"])
    return folded


def _add_times(total: dict[str, float], times: dict[str, float], prefix: str) -> None:
    for key, val in times.items():
        total[f"{prefix}_{key}_s"] = total.get(f"{prefix}_{key}_s", 0.0) + val
