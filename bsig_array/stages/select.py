"""Select stage: AIC forward selection (or Lasso) on screened candidates, with LOO-CV.

Second half of Algorithm 4 (docs/DESIGN.md §4).  For every benchmark, the candidates are the union of its
low and high tails for one screening method (``candidate_token``), their NLL columns come from the
screen output's ``candidate_nll`` (the full perplexity store is never reread), and the covariate is
perplexity ``exp(nll)`` (the paper) or ``nll``.

* ``method="aic"``: forward selection with an intercept, AIC exactly as statsmodels' OLS, adding the
  best candidate while ``AIC_new < AIC − delta``, at most ``max_features`` (default m − 2).  The
  candidates are shuffled with ``seed`` first; the shuffled order breaks exact ties.  The kernel is
  :func:`bsig_array.kernels.forward.forward_select` (all candidates per step in one pass).
* ``method="lasso"``: the paper repo's variant for the AIC-vs-Lasso comparison: standardize the
  columns (``StandardScaler``), centre ``y``, ``sklearn.linear_model.Lasso(alpha, fit_intercept=False)``
  on the candidates in token order (no shuffle, no seed); the non-zero coefficients (largest
  ``|coef|`` first) form the signature.  ``aic`` and ``aic_null`` are NaN for Lasso.

Leave-one-model-out validation reruns the *whole selection* (same method and settings) without
model i and predicts model i's score from that fold's fit; ``loocv_r2 = 1 − Σ(yᵢ − ŷᵢ)² /
Σ(yᵢ − ȳ)²``.  The screen itself was computed on all models, so this validates the selection step
only: the candidates were already chosen with model i's score.  (Screening per fold would need a
full pass over the perplexity store per model.)  Expect ``loocv_r2`` well below the in-sample
``r2_adj``; a value near or below zero means the signature does not predict held-out models.

Benchmarks are independent tasks on the stage task runner (:mod:`bsig_array.runtime.tasks`:
threads by default, numpy and numba release the GIL; ``--scheduler`` works as for the screen), as
many at once as the memory plan (:func:`bsig_array.stages.select_cost.plan_selection`) allows; a
benchmark whose candidate block does not fit is streamed from the screen store in column blocks
(read one storage chunk at a time, :class:`_GatheredColumns`), the LOO folds are batched so their
per-candidate state fits, and when even that does not fit the state is spilled to a temporary file
(``forward_select(spill=True)``): memory then grows with a benchmark's candidates only by their
lists (ids, positions and tie-break priorities, docs/DESIGN.md §5).  The driver holds nothing per
candidate: each task reads its own candidate list and returns only the tokens it picked.  The output's schema and writer are :mod:`bsig_array.io.signatures`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from bsig_array.errors import InputError, OptionError
from bsig_array.io.provenance import (
    check_fingerprint,
    fingerprints_of,
    make_record,
    name,
    performance_fingerprint,
    read_record,
    record_attrs,
)
from bsig_array.io.scores import align_performance
from bsig_array.io.screen_output import benchmark_candidates
from bsig_array.io.signatures import BenchmarkSelection, build_signatures
from bsig_array.kernels.forward import forward_select, ols_fit
from bsig_array.kernels.unique import sorted_unique
from bsig_array.options import check_choice, check_nonnegative, check_number
from bsig_array.runtime.boundary import kernel_errors
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.device import gpu_free_bytes, resolve_device
from bsig_array.runtime.run import RunSpec
from bsig_array.runtime.tasks import describe_scheduler, task_runner
from bsig_array.schema import BENCHMARK, CANDIDATE, COEFFICIENT, COVARIATES, MODEL, RANK, SELECTION_METHODS
from bsig_array.stages.select_cost import (
    READ_SPAN_COLUMNS,
    STREAM_BLOCK_COLUMNS,
    SelectPlan,
    gpu_task_bytes,
    plan_selection,
    read_bytes,
)


def _aligned_scores(screen: xr.Dataset, score: xr.DataArray) -> xr.DataArray:
    """``score`` in the screen's model order, restricted to the screened benchmarks."""
    models = [str(m) for m in screen["candidate_nll"]["model"].values]
    benchmarks = [str(b) for b in screen["benchmark"].values]
    have = {str(b) for b in score["benchmark"].values}
    missing = [b for b in benchmarks if b not in have]
    if missing:
        raise InputError(
            f"benchmarks {missing[:5]}{' ...' if len(missing) > 5 else ''} were screened but have no scores; "
            "pass the --performance file the screen was run with"
        )
    score = score.assign_coords(benchmark=[str(b) for b in score["benchmark"].values])
    return align_performance(score.sel(benchmark=benchmarks), models)


class _GatheredColumns:
    """``candidate_nll`` columns at sorted candidate positions, read one storage chunk at a time.

    ``obj[:, a:b]`` (or ``obj[:, index_array]``) returns the float32 columns as numpy.  Each storage
    chunk of the candidate axis that the requested positions touch is read as one contiguous slice
    (one Zarr chunk read; never a dask graph over all positions; consecutive small chunks are read
    together up to :data:`READ_SPAN_COLUMNS` columns), and the last span read is kept for the next
    request, so a pass over consecutive column blocks reads every touched chunk once and holds one
    span plus the block, whatever the number of candidates.
    """

    def __init__(self, nll: xr.DataArray, columns: np.ndarray, span_columns: int = READ_SPAN_COLUMNS) -> None:
        self.nll = nll.transpose(MODEL, CANDIDATE)
        self.columns = np.asarray(columns, dtype=np.int64)
        self.shape = (self.nll.sizes[MODEL], self.columns.size)
        self.edges = _chunk_edges(self.nll)
        self.span_columns = int(span_columns)
        self._span: tuple[int, int, np.ndarray] | None = None  # first chunk, last chunk + 1, values

    def __getitem__(self, key: tuple[Any, Any]) -> np.ndarray:
        rows, cols = key
        pos = self.columns[cols]
        order = None
        if pos.size > 1 and not bool(np.all(pos[1:] > pos[:-1])):  # not strictly increasing
            order = np.argsort(pos, kind="stable")
            pos = pos[order]
        out = np.empty((self.shape[0], pos.size), dtype=self.nll.dtype)
        which = np.searchsorted(self.edges, pos, side="right") - 1  # the chunk holding each position
        starts = np.flatnonzero(np.diff(which, prepend=-1))
        last = int(which[-1]) if pos.size else 0
        for s, e in zip(starts.tolist(), [*starts[1:].tolist(), pos.size]):
            base, values = self._read(int(which[s]), last)
            lo, hi = int(pos[s]) - base, int(pos[e - 1]) - base + 1
            # distinct consecutive positions are a slice copy, several times faster than a gather
            run = order is None and hi - lo == e - s
            out[:, s:e] = values[:, lo:hi] if run else values[:, pos[s:e] - base]
        if order is not None:
            unsorted = np.empty_like(out)
            unsorted[:, order] = out
            out = unsorted
        return out[rows]

    def _read(self, c: int, last: int) -> tuple[int, np.ndarray]:
        """(first position, values) of a span of chunks holding chunk ``c``, reading it if needed."""
        edges = self.edges
        if self._span is not None and self._span[0] <= c < self._span[1]:
            return int(edges[self._span[0]]), self._span[2]
        self._span = None  # let the previous span go before the next is read
        stop = c + 1  # add the next chunks this request needs while the span stays within one read
        while stop <= last and edges[stop + 1] - edges[c] <= max(self.span_columns, edges[c + 1] - edges[c]):
            stop += 1
        a, b = int(edges[c]), int(edges[stop])
        if self.nll.chunks is not None:  # dask: this one slice, run inline (the benchmark pool is the concurrency)
            values = np.asarray(self.nll.data[:, a:b].compute(scheduler="synchronous"))
        else:  # numpy (a view) or a lazily indexed backend array (reads the slice)
            values = np.asarray(self.nll.isel({CANDIDATE: slice(a, b)}).values)
        self._span = (c, stop, values)
        return a, values


def _storage_chunk(nll: xr.DataArray) -> int:
    """Chunk length along ``candidate`` of a lazily read ``nll`` without dask (0: held in memory)."""
    preferred = nll.encoding.get("preferred_chunks", {}).get(CANDIDATE)
    chunks = nll.encoding.get("chunks")
    return int(preferred or (chunks[-1] if chunks else 0))


def _chunk_edges(nll: xr.DataArray) -> np.ndarray:
    """Start of every storage chunk along ``candidate`` of ``nll`` (model, candidate), then its length.

    Dask chunks, else the store's chunks from the encoding; an array with neither is in memory and
    is one "chunk" (read as a view).
    """
    size = nll.sizes[CANDIDATE]
    if nll.chunks is not None:
        lengths = np.asarray(nll.chunks[1], dtype=np.int64)
    else:
        step = _storage_chunk(nll) or max(size, 1)
        lengths = np.full(-(-size // step), step, dtype=np.int64)
    return np.concatenate(([0], np.minimum(np.cumsum(lengths), size)))


def _read_bytes(nll: xr.DataArray) -> int:
    """Bytes of the largest span :class:`_GatheredColumns` reads from ``nll`` (0 when it is in memory)."""
    if nll.chunks is not None:
        longest = max(nll.chunks[1], default=0)
    elif _storage_chunk(nll):
        longest = _storage_chunk(nll)
    else:
        return 0
    return read_bytes(nll.sizes[MODEL], nll.sizes[CANDIDATE], int(longest), nll.dtype.itemsize)


def _shuffle_priority(n: int, seed: int, index: int) -> np.ndarray:
    """Position of each candidate in a seeded shuffle (smaller wins an exact tie)."""
    perm = np.random.default_rng([seed, index]).permutation(n)
    priority = np.empty(n, dtype=np.int64)
    step = STREAM_BLOCK_COLUMNS * 64  # invert in pieces: no third n-long array
    for a in range(0, n, step):
        priority[perm[a : a + step]] = np.arange(a, min(a + step, n), dtype=np.int64)
    return priority


def _covariate(values: np.ndarray, covariate: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.exp(values) if covariate == "perplexity" else values


def _loocv_r2(y: np.ndarray, predicted: np.ndarray) -> float:
    tss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - predicted) ** 2)) / tss


def _gpu(device: str | None, plan: SelectPlan, m: int, n: int) -> Any:
    """CuPy when this benchmark's selection steps run on the GPU, else ``None`` (the CPU path).

    The GPU step (:mod:`bsig_array.kernels.cuda_forward`) needs the candidate block in memory
    (``plan.cache``) and fitting, with every concurrent benchmark's, in 90% of the free device memory.
    """
    if device != "gpu" or not plan.cache:
        return None
    if gpu_task_bytes(m, n, plan.fold_batch) * plan.workers > 0.9 * gpu_free_bytes():
        return None
    import cupy

    return cupy


def _select_aic(
    X: Any, y: np.ndarray, priority: np.ndarray, covariate: str, *, delta: float, max_features: int | None,
    loocv: bool, plan: SelectPlan, column: Callable[[np.ndarray], np.ndarray], device: str | None = None,
) -> BenchmarkSelection:
    m = y.size
    masks = np.ones((1, m), dtype=bool)
    if loocv:
        masks = np.vstack([masks, ~np.eye(m, dtype=bool)])
    kwargs: dict[str, Any] = dict(
        delta=delta, max_features=max_features, priority=priority, exponentiate=covariate == "perplexity",
        cache=plan.cache, block_columns=None if plan.cache else STREAM_BLOCK_COLUMNS, spill=plan.spill,
    )
    cp, y_in = _gpu(device, plan, m, int(X.shape[1])), y
    if cp is not None:  # the same selection, its arrays on the device and the per-step update as CUDA kernels
        X, y_in, masks = cp.asarray(X), cp.asarray(y), cp.asarray(masks)
        kwargs.update(priority=cp.asarray(priority), backend="cuda")
    paths = [forward_select(X, y_in, row_masks=masks[i : i + plan.fold_batch], **kwargs)
             for i in range(0, masks.shape[0], plan.fold_batch)]
    selected = np.concatenate([_pad(p.selected, m) for p in paths])
    aic = np.concatenate([_pad(p.aic, m, np.nan) for p in paths])
    aic0 = float(paths[0].aic0[0])

    full = selected[0][selected[0] >= 0]
    Xs = column(full)
    fit = ols_fit(Xs, y)
    loo = math.nan
    if loocv:
        predicted = np.empty(m)
        for i in range(m):
            sel = selected[i + 1][selected[i + 1] >= 0]
            keep = np.arange(m) != i
            Xi = column(sel)
            fi = ols_fit(Xi[keep], y[keep])
            predicted[i] = fi.intercept + float(Xi[i] @ np.asarray(fi.coefficient))
        loo = _loocv_r2(y, predicted)
    return BenchmarkSelection(
        columns=full, aic=aic[0][: full.size], coefficient=np.asarray(fit.coefficient), intercept=fit.intercept,
        r2=fit.r2, r2_adj=fit.r2_adj, loocv_r2=loo, aic_null=aic0,
    )


def _pad(a: np.ndarray, width: int, fill: Any = -1) -> np.ndarray:
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a[:, :width]
    return out


def _materialize(X: Any) -> np.ndarray:
    return X if isinstance(X, np.ndarray) else X[:, 0 : X.shape[1]]


def _lasso_fit(
    Xc: np.ndarray, y: np.ndarray, alpha: float, max_features: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Paper-repo Lasso on covariate columns ``Xc`` (m, n): (support, raw-scale coefficients, intercept).

    ``StandardScaler`` columns, centred ``y``, ``Lasso(alpha, fit_intercept=False)`` with sklearn's
    defaults otherwise.  The support is ordered by decreasing ``|coef|`` (ties: column order) and cut
    at ``max_features``; coefficients are mapped back to the covariate scale.
    """
    from sklearn.linear_model import Lasso
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(Xc)
    coef = Lasso(alpha=alpha, fit_intercept=False).fit(scaler.transform(Xc), y - y.mean()).coef_
    support = np.flatnonzero(coef != 0.0)
    support = support[np.argsort(-np.abs(coef[support]), kind="stable")]
    if max_features is not None:
        support = support[:max_features]
    raw = coef[support] / scaler.scale_[support]
    intercept = float(y.mean() - raw @ scaler.mean_[support])
    return support, raw, intercept


def _select_lasso(
    X: np.ndarray, y: np.ndarray, covariate: str, *, alpha: float, max_features: int | None, loocv: bool
) -> BenchmarkSelection:
    m = y.size
    Xc = _covariate(X, covariate)  # candidates in token order, as the paper repo feeds them
    support, coef, intercept = _lasso_fit(Xc, y, alpha, max_features)
    fitted = intercept + Xc[:, support] @ coef
    rss = float(np.sum((y - fitted) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - rss / tss
    k = support.size
    r2_adj = 1.0 - (m - 1) / (m - k - 1) * (1.0 - r2) if m - k - 1 > 0 else math.nan
    loo = math.nan
    if loocv:
        predicted = np.empty(m)
        for i in range(m):
            keep = np.arange(m) != i
            s, c, b = _lasso_fit(Xc[keep], y[keep], alpha, max_features)
            predicted[i] = b + Xc[i, s] @ c
        loo = _loocv_r2(y, predicted)
    return BenchmarkSelection(
        columns=support, aic=np.full(k, np.nan), coefficient=coef, intercept=intercept, r2=r2,
        r2_adj=r2_adj, loocv_r2=loo, aic_null=math.nan,
    )


def select_benchmark(
    X: Any, y: np.ndarray, *, method: str = "aic", delta: float = 0.0, max_features: int | None = None,
    covariate: str = "perplexity", seed: int = DEFAULTS.seed, index: int = 0, loocv: bool = True,
    lasso_alpha: float = DEFAULTS.lasso_alpha, plan: SelectPlan | None = None, device: str | None = None,
) -> BenchmarkSelection:
    """Select one benchmark's signature from its candidate NLL columns.

    Parameters
    ----------
    X
        (m, n) candidate NLLs (numpy array, or an object slicing ``X[:, a:b]`` into numpy).
    y
        (m,) the benchmark's scores, in the same model order.
    method, delta, max_features, covariate, seed, loocv, lasso_alpha
        As in :func:`select_signatures`.
    index
        The benchmark's position: the shuffle uses ``default_rng([seed, index])``, so every
        benchmark's order is fixed by the seed whatever runs first.
    plan
        Memory plan (default: everything in memory, all fits in one pass).
    device
        ``None`` (CPU) or ``"gpu"`` (resolved): on ``gpu``, AIC selection runs its per-step update on the
        GPU when the candidate block fits device memory, else on the CPU.

    Returns
    -------
    BenchmarkSelection
        ``columns`` index ``X``'s columns in selection order.
    """
    y = np.asarray(y, dtype=np.float64)
    m, n = int(X.shape[0]), int(X.shape[1])
    plan = plan or SelectPlan(1, True, m + 1, 0, 0)
    if plan.cache or method == "lasso":  # gather once; the kernel reuses it for every batch of fits
        X = _materialize(X)
    if method == "lasso":
        return _select_lasso(X, y, covariate, alpha=lasso_alpha, max_features=max_features, loocv=loocv)
    priority = _shuffle_priority(n, seed, index)
    fetched: dict[int, np.ndarray] = {}

    def column(cols: np.ndarray) -> np.ndarray:
        """Covariate columns (m, len(cols)) for the final fits, each read once."""
        need = sorted_unique(np.asarray([c for c in cols if int(c) not in fetched], dtype=np.int64))
        if need.size:
            for c, v in zip(need.tolist(), _covariate(np.asarray(X[:, need]), covariate).T):
                fetched[c] = v
        return np.stack([fetched[int(c)] for c in cols], axis=1) if len(cols) else np.zeros((m, 0))

    return _select_aic(
        X, y, priority, covariate, delta=delta, max_features=max_features, loocv=loocv, plan=plan, column=column,
        device=device,
    )


def _check_options(method: str, screen_method: str, covariate: str, delta: float, max_features: int | None,
                   lasso_alpha: float, screen: xr.Dataset) -> None:
    check_choice(method, SELECTION_METHODS, "selection method", "(--method)")
    check_choice(covariate, COVARIATES, "covariate", "(--covariate)")
    for var in ("candidate_token", "candidate_nll"):
        if var not in screen:
            raise InputError(f"screen output has no {var!r}; pass a store written by bsig screen")
    have = [str(v) for v in screen[COEFFICIENT].values]
    if screen_method not in have:
        raise InputError(f"the screen has no {screen_method!r} tails (it has {have}); pass --screen-method {have[0]}")
    check_nonnegative(delta, "--delta")
    check_number(lasso_alpha, "--lasso-alpha")
    if max_features is not None and max_features < 1:
        raise OptionError(f"--max-features must be at least 1, got {max_features}")
    if not lasso_alpha > 0:
        raise OptionError(f"--lasso-alpha must be positive, got {lasso_alpha}")


def select_signatures(
    screen: xr.Dataset,
    score: xr.DataArray,
    *,
    method: str = "aic",
    screen_method: str = "thrush",
    delta: float = 0.0,
    max_features: int | None = None,
    covariate: str = "perplexity",
    loocv: bool = True,
    lasso_alpha: float = DEFAULTS.lasso_alpha,
    allow_mismatch: bool = False,
    input_paths: Mapping[str, Any] | None = None,
    run: RunSpec | None = None,
) -> xr.Dataset:
    """Select every screened benchmark's signature.

    Parameters
    ----------
    screen
        Screen output (docs/formats.md, "Screen output"): ``candidate_token``, ``candidate_nll``.
    score
        ``score (model, benchmark)``; matched to the screen's models by name.
    method
        ``"aic"`` (forward selection) or ``"lasso"`` (paper-repo Lasso).
    screen_method
        Whose tails form the candidates: ``"thrush"`` or ``"preselect"``.
    delta
        AIC tolerance: add a token only while ``AIC_new < AIC − delta``.
    max_features
        Cap on signature length (default m − 2; for Lasso the largest ``|coef|`` are kept).
    covariate
        ``"perplexity"`` (``exp(nll)``, the paper) or ``"nll"``.
    loocv
        Leave-one-model-out validation (reruns the selection m times per benchmark; see module doc).
    lasso_alpha
        sklearn ``Lasso`` penalty for ``method="lasso"``.
    allow_mismatch
        Use ``score`` even when it is not the performance matrix the screen was made with (a
        warning instead of an :class:`InputError`; :mod:`bsig_array.io.provenance`).
    input_paths
        Paths of the inputs (``"screen"``, ``"performance"``, ``"corpus"``), recorded in the
        output's provenance and named in messages.
    run
        The run's settings (:class:`~bsig_array.runtime.run.RunSpec`; default: the defaults in
        effect): ``memory_limit`` for the plan; ``workers`` bounds concurrent benchmarks before it
        (the plan may lower it); ``scheduler`` (:mod:`bsig_array.runtime.tasks`); ``device``
        (``auto``, ``cpu`` or ``gpu``: on a GPU (CuPy) each AIC step's candidate update runs as CUDA
        kernels for benchmarks whose candidate block fits device memory); ``seed`` of the
        per-benchmark candidate shuffle that breaks exact AIC ties; ``progress``: one bar advanced
        per finished benchmark.

    Returns
    -------
    xr.Dataset
        docs/formats.md, "Signatures": ``signature_token``, ``aic``, ``coefficient`` (benchmark, step);
        ``intercept``, ``r2``, ``r2_adj``, ``loocv_r2``, ``n_selected``, ``n_candidates``, ``aic_null``
        (benchmark).

    Raises
    ------
    OptionError, InputError, PlanError
        On bad options, a score table that does not match the screen (models, benchmarks, constant or
        missing scores), an inconsistent screen store, or a memory limit that cannot fit one benchmark.
    """
    run = RunSpec.build() if run is None else run
    scheduler, seed, progress = run.scheduler, run.seed, run.progress
    _check_options(method, screen_method, covariate, delta, max_features, lasso_alpha, screen)
    device = resolve_device(run.device)
    screen_name = f"screen {name('screen', input_paths, '(in memory)')}"
    made_from = read_record(screen.attrs, screen_name)
    score_print = performance_fingerprint(score)
    given = name("performance", input_paths, "given")
    if made_from is not None:  # an unrecorded screen is warned about once the selection has succeeded
        check_fingerprint(made_from, "performance", score_print, artifact=screen_name, given=given,
                          allow_mismatch=allow_mismatch)
    y_all = _aligned_scores(screen, score)
    benchmarks = [str(b) for b in screen[BENCHMARK].values]
    nll = screen["candidate_nll"].transpose(MODEL, CANDIDATE)
    m = nll.sizes[MODEL]
    n_max = 2 * screen.sizes[RANK]  # both tails full: the most candidates a benchmark can have
    # The driver holds nothing per candidate: each task finds its own candidates and returns its picks.
    plan = plan_selection(run.memory_limit, m, max(n_max, 1), method=method, loocv=loocv, n_tasks=len(benchmarks),
                          chunk_bytes=_read_bytes(nll), max_workers=run.workers)
    job = SelectJob(
        screen=screen, nll=nll, y=np.asarray(y_all.transpose(BENCHMARK, MODEL).values, dtype=np.float64),
        benchmarks=tuple(benchmarks), screen_method=screen_method, method=method, delta=float(delta),
        max_features=max_features, covariate=covariate, seed=int(seed), loocv=bool(loocv),
        lasso_alpha=float(lasso_alpha), plan=plan,
        limit_blas=not (isinstance(scheduler, str) and scheduler in ("threads", "synchronous")), device=device,
    )
    results: list[tuple[np.ndarray, int, BenchmarkSelection] | None] = [None] * len(benchmarks)
    # Threads share this process: pin BLAS here, once, around the whole run (see select_task).
    with threadpool_limits(limits=1, user_api="blas"), task_runner(scheduler, plan.workers) as runner, \
            kernel_errors("selection"), progress(f"select ({method})", total=len(benchmarks), unit="benchmarks") as bar:
        for i, picked, n_candidates, result in runner.imap_unordered(
            select_task, [(job, i) for i in range(len(benchmarks))]
        ):
            results[i] = (picked, n_candidates, result)
            bar.advance(1)
    done = [r for r in results if r is not None]
    bench_coords = {
        str(name): c.values for name, c in y_all.coords.items() if c.dims == (BENCHMARK,) and name != BENCHMARK
    }
    # Each result's columns index its picked tokens (see select_task); the candidate counts come separately.
    ds = build_signatures([r for _, _, r in done], [t for t, _, _ in done], benchmarks, bench_coords)
    ds["n_candidates"] = (BENCHMARK, np.array([n for _, n, _ in done], dtype=np.int64))
    ds.attrs.update(
        method=method, screen_method=screen_method, covariate=covariate, delta=float(delta), seed=int(seed),
        max_features=-1 if max_features is None else int(max_features), loocv=bool(loocv),
        loocv_scope="selection rerun per left-out model; screening used all models",
        plan=plan.describe(), scheduler=describe_scheduler(scheduler),
    )
    if method == "lasso":
        ds.attrs["lasso_alpha"] = float(lasso_alpha)
    if made_from is None:
        check_fingerprint(None, "performance", score_print, artifact=screen_name, given=given)
    ds.attrs.update(record_attrs(make_record(
        "signatures", inputs=dict(input_paths or {}),
        fingerprints={**fingerprints_of(made_from), "performance": score_print},
        options=dict(method=method, screen_method=screen_method, covariate=covariate, delta=float(delta),
                     max_features=max_features, loocv=bool(loocv), lasso_alpha=float(lasso_alpha),
                     **run.record(), resolved_device=device),
    )))
    for key in ("alpha", "ties", "n_tokens", "k"):
        if key in screen.attrs:
            ds.attrs[f"screen_{key}"] = screen.attrs[key]
    return ds


@dataclass(frozen=True)
class SelectJob:
    """What every selection task needs (shipped with each task; the screen's arrays stay lazy)."""

    screen: xr.Dataset
    nll: xr.DataArray  # candidate_nll (model, candidate)
    y: np.ndarray  # (benchmark, model) scores in the screen's model order
    benchmarks: tuple[str, ...]
    screen_method: str
    method: str
    delta: float
    max_features: int | None
    covariate: str
    seed: int
    loocv: bool
    lasso_alpha: float
    plan: SelectPlan
    limit_blas: bool  # pin BLAS to one thread inside the task (worker processes)
    device: str = "cpu"  # resolved: "gpu" runs the selection steps on the GPU where they fit


def select_task(job: SelectJob, i: int) -> tuple[int, np.ndarray, int, BenchmarkSelection]:
    """Select benchmark ``i``'s signature: ``(i, picked token ids, number of candidates, result)``.

    The result's ``columns`` index the picked token ids, not the candidates: the driver keeps every
    benchmark's result, so it must not keep a candidate list each (8 bytes per candidate).

    BLAS runs on one thread: the kernel's products are thin (2 or 2(m+1) rows × m) and
    memory-bound, OpenBLAS threads do not speed them up and, on a busy machine, their spin-waiting
    made one benchmark 5-10x slower (measured: 1.64 s vs 0.17 s for 5e4 candidates); parallelism
    comes from benchmarks instead.  In worker processes the pin is set here, per task.
    """
    limit = threadpool_limits(limits=1, user_api="blas") if job.limit_blas else contextlib.nullcontext()
    with limit:
        tokens, cols = benchmark_candidates(job.screen, job.benchmarks[i], job.screen_method)
        result = select_benchmark(
            _GatheredColumns(job.nll, cols), job.y[i], method=job.method, delta=job.delta,
            max_features=job.max_features, covariate=job.covariate, seed=job.seed, index=i, loocv=job.loocv,
            lasso_alpha=job.lasso_alpha, plan=job.plan, device=job.device,
        )
    picked = tokens[result.columns]
    return i, picked, int(tokens.size), dataclasses.replace(result, columns=np.arange(picked.size))
