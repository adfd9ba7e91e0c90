"""Signature selection: AIC forward selection (or Lasso) on screened candidates, with LOO-CV.

Second half of Algorithm 4 (DESIGN §4).  For every benchmark, the candidates are the union of its
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

Benchmarks run concurrently on a thread pool (numpy and numba release the GIL) sized from the memory
limit; a benchmark whose candidate block does not fit is streamed from the screen store in column
blocks, and the LOO folds are batched so their per-candidate state fits.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bsig_array.atomic import atomic_output
from bsig_array.errors import BsigError
from bsig_array.kernels.forward import DEFAULT_BLOCK_COLUMNS, forward_select, ols_fit
from bsig_array.memory import PROCESS_OVERHEAD, format_bytes, parse_memory

METHODS = ("aic", "lasso")
COVARIATES = ("perplexity", "nll")
#: Lasso penalty on standardized columns and centred scores (sklearn's ``alpha``).  The paper does
#: not state its value; 1e-3 keeps tens of tokens for score spreads of a few percentage points.
DEFAULT_LASSO_ALPHA = 1e-3
#: Selection's own fixed cost on top of the process: numba's compiled kernels and the zarr/dask read
#: machinery (measured: ~60 MiB more RSS after the first selection than after the imports).
RUNTIME_OVERHEAD = 64 * 2**20
#: Columns per block when a benchmark's candidates are streamed instead of held in memory.
STREAM_BLOCK_COLUMNS = 1 << 14

__all__ = [
    "BenchmarkSelection",
    "COVARIATES",
    "DEFAULT_LASSO_ALPHA",
    "METHODS",
    "RUNTIME_OVERHEAD",
    "SelectPlan",
    "attach_contexts",
    "benchmark_candidates",
    "open_screen",
    "plan_selection",
    "select_benchmark",
    "select_signatures",
    "write_signatures",
]


# ----------------------------------------------------------------------------- memory plan


@dataclass(frozen=True)
class SelectPlan:
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
    """

    workers: int
    cache: bool
    fold_batch: int
    task_bytes: int
    memory_limit: int

    def describe(self) -> str:
        """One line with the plan's numbers."""
        mode = "in memory" if self.cache else "streamed"
        return (
            f"{self.workers} worker(s) x {format_bytes(self.task_bytes)} per benchmark "
            f"(candidates {mode}, {self.fold_batch} fits per pass) within {format_bytes(self.memory_limit)}"
        )


def _task_bytes(m: int, n: int, problems: int, cache: bool, method: str) -> int:
    """Projected peak bytes of one benchmark task with ``n`` candidates (checked by an RSS test).

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
    candidate axis).  Refuses (BsigError with the numbers) when even one streamed task with one fit
    per pass does not fit.
    """
    limit = parse_memory(memory_limit)
    budget = limit - PROCESS_OVERHEAD - RUNTIME_OVERHEAD - driver_bytes
    cpus = max(1, min(os.cpu_count() or 1, n_tasks))
    problems = (m + 1) if (loocv and method == "aic") else 1
    for cache in (True, False):
        if method == "lasso" and not cache:
            break
        batches = sorted({problems, *(b for b in (16, 8, 4, 2, 1) if b < problems)}, reverse=True)
        for batch in batches:
            task = _task_bytes(m, n_max, batch, cache, method)
            workers = min(cpus, budget // task) if task > 0 else cpus
            if workers >= 1:
                return SelectPlan(int(workers), cache, batch, int(task), limit)
    need = PROCESS_OVERHEAD + RUNTIME_OVERHEAD + driver_bytes + _task_bytes(m, n_max, 1, method == "lasso", method)
    raise BsigError(
        f"selection needs at least {format_bytes(need)} for {n_max} candidates x {m} models "
        f"but --memory-limit is {format_bytes(limit)}; raise --memory-limit"
    )


# ----------------------------------------------------------------------------- inputs


def _aligned_scores(screen: xr.Dataset, score: xr.DataArray) -> xr.DataArray:
    """``score`` in the screen's model order, restricted to the screened benchmarks."""
    from bsig_array.performance import align_performance

    models = [str(m) for m in screen["candidate_nll"]["model"].values]
    benchmarks = [str(b) for b in screen["benchmark"].values]
    have = {str(b) for b in score["benchmark"].values}
    missing = [b for b in benchmarks if b not in have]
    if missing:
        raise BsigError(
            f"benchmarks {missing[:5]}{' ...' if len(missing) > 5 else ''} were screened but have no scores; "
            "pass the --performance file the screen was run with"
        )
    score = score.assign_coords(benchmark=[str(b) for b in score["benchmark"].values])
    return align_performance(score.sel(benchmark=benchmarks), models)


def benchmark_candidates(
    screen: xr.Dataset, benchmark: str, screen_method: str, union: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of one benchmark's candidates (both tails, sorted) and their ``candidate_nll`` columns.

    Parameters
    ----------
    screen
        Screen output (README "Screen output").
    benchmark, screen_method
        Which benchmark and which screening method's tails.
    union
        The screen's ``candidate`` axis, if already loaded.

    Returns
    -------
    tokens, columns
        int64 arrays of equal length.
    """
    # dict form: DataArray.sel's own ``method`` keyword would swallow the dimension name
    tokens = np.asarray(screen["candidate_token"].sel({"method": screen_method, "benchmark": benchmark}).values).ravel()
    tokens = _sorted_unique(tokens[tokens >= 0].astype(np.int64))
    union = _candidate_axis(screen) if union is None else union
    cols = np.searchsorted(union, tokens)
    ok = cols < union.size
    ok[ok] = union[cols[ok]] == tokens[ok]
    if not ok.all():
        raise BsigError(
            f"screen store is inconsistent: token {int(tokens[~ok][0])} of {benchmark} has no candidate_nll "
            "column; rerun bsig screen"
        )
    return tokens, cols.astype(np.int64)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: numpy's hash ``unique`` took 0.35 s on 3.4e5 ids)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


def _candidate_axis(screen: xr.Dataset) -> np.ndarray:
    union = np.asarray(screen["candidate_nll"]["candidate"].values, dtype=np.int64)
    if union.size > 1 and np.any(np.diff(union) <= 0):
        raise BsigError("screen store's candidate axis is not sorted and unique; rerun bsig screen")
    return union


class _GatheredColumns:
    """Lazily gathered ``candidate_nll`` columns: ``obj[:, a:b]`` reads only those columns."""

    def __init__(self, nll: xr.DataArray, columns: np.ndarray) -> None:
        self.nll = nll
        self.columns = columns
        self.shape = (nll.sizes["model"], columns.size)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        return _gather(self.nll, self.columns[cols])[rows]


def _gather(nll: xr.DataArray, columns: np.ndarray) -> np.ndarray:
    """(model, len(columns)) values of ``nll`` at candidate positions ``columns`` (sorted)."""
    part = nll.isel(candidate=columns).data
    if hasattr(part, "compute"):  # dask: run inline, the benchmark pool is the concurrency
        part = part.compute(scheduler="synchronous")
    return np.asarray(part)


# ----------------------------------------------------------------------------- one benchmark


@dataclass
class BenchmarkSelection:
    """Selection result of one benchmark (columns index the benchmark's candidates)."""

    columns: np.ndarray
    aic: np.ndarray
    coefficient: np.ndarray
    intercept: float
    r2: float
    r2_adj: float
    loocv_r2: float
    aic_null: float


def _shuffle_priority(n: int, seed: int, index: int) -> np.ndarray:
    """Position of each candidate in a seeded shuffle (smaller wins an exact tie)."""
    perm = np.random.default_rng([seed, index]).permutation(n)
    priority = np.empty(n, dtype=np.int64)
    priority[perm] = np.arange(n, dtype=np.int64)
    return priority


def _covariate(values: np.ndarray, covariate: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.exp(values) if covariate == "perplexity" else values


def _loocv_r2(y: np.ndarray, predicted: np.ndarray) -> float:
    tss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - predicted) ** 2)) / tss


def _select_aic(
    X: Any, y: np.ndarray, priority: np.ndarray, covariate: str, *, delta: float, max_features: int | None,
    loocv: bool, plan: SelectPlan, column: Callable[[np.ndarray], np.ndarray],
) -> BenchmarkSelection:
    m = y.size
    masks = np.ones((1, m), dtype=bool)
    if loocv:
        masks = np.vstack([masks, ~np.eye(m, dtype=bool)])
    kwargs = dict(
        delta=delta, max_features=max_features, priority=priority, exponentiate=covariate == "perplexity",
        cache=plan.cache, block_columns=None if plan.cache else STREAM_BLOCK_COLUMNS,
    )
    paths = [forward_select(X, y, row_masks=masks[i : i + plan.fold_batch], **kwargs)
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
    covariate: str = "perplexity", seed: int = 0, index: int = 0, loocv: bool = True,
    lasso_alpha: float = DEFAULT_LASSO_ALPHA, plan: SelectPlan | None = None,
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
        need = _sorted_unique(np.asarray([c for c in cols if int(c) not in fetched], dtype=np.int64))
        if need.size:
            for c, v in zip(need.tolist(), _covariate(np.asarray(X[:, need]), covariate).T):
                fetched[c] = v
        return np.stack([fetched[int(c)] for c in cols], axis=1) if len(cols) else np.zeros((m, 0))

    return _select_aic(
        X, y, priority, covariate, delta=delta, max_features=max_features, loocv=loocv, plan=plan, column=column
    )


# ----------------------------------------------------------------------------- the stage


def _check_options(method: str, screen_method: str, covariate: str, delta: float, max_features: int | None,
                   lasso_alpha: float, screen: xr.Dataset) -> None:
    if method not in METHODS:
        raise BsigError(f"unknown selection method {method!r}; use --method aic or lasso")
    if covariate not in COVARIATES:
        raise BsigError(f"unknown covariate {covariate!r}; use --covariate perplexity or nll")
    for var in ("candidate_token", "candidate_nll"):
        if var not in screen:
            raise BsigError(f"screen output has no {var!r}; pass a store written by bsig screen")
    have = [str(v) for v in screen["method"].values]
    if screen_method not in have:
        raise BsigError(f"the screen has no {screen_method!r} tails (it has {have}); pass --screen-method {have[0]}")
    if not (delta >= 0 and math.isfinite(delta)):
        raise BsigError(f"--delta must be a finite number >= 0, got {delta}")
    if max_features is not None and max_features < 1:
        raise BsigError(f"--max-features must be at least 1, got {max_features}")
    if not lasso_alpha > 0:
        raise BsigError(f"--lasso-alpha must be positive, got {lasso_alpha}")


def select_signatures(
    screen: xr.Dataset,
    score: xr.DataArray,
    *,
    method: str = "aic",
    screen_method: str = "thrush",
    delta: float = 0.0,
    max_features: int | None = None,
    covariate: str = "perplexity",
    seed: int = 0,
    loocv: bool = True,
    memory_limit: int | str = "2GiB",
    lasso_alpha: float = DEFAULT_LASSO_ALPHA,
    workers: int | None = None,
    on_benchmark: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Select every screened benchmark's signature.

    Parameters
    ----------
    screen
        Screen output (README "Screen output"): ``candidate_token``, ``candidate_nll``.
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
    seed
        Seeds the per-benchmark candidate shuffle that breaks exact AIC ties.
    loocv
        Leave-one-model-out validation (reruns the selection m times per benchmark; see module doc).
    memory_limit
        Peak memory promise for the run (e.g. ``"2GiB"``).
    lasso_alpha
        sklearn ``Lasso`` penalty for ``method="lasso"``.
    workers
        Cap on concurrent benchmarks (default: what the memory plan allows, at most the CPU count).
    on_benchmark
        Called with each benchmark's name when it is done (progress).

    Returns
    -------
    xr.Dataset
        README "Signatures": ``signature_token``, ``aic``, ``coefficient`` (benchmark, step);
        ``intercept``, ``r2``, ``r2_adj``, ``loocv_r2``, ``n_selected``, ``n_candidates``, ``aic_null``
        (benchmark).

    Raises
    ------
    BsigError
        On bad options, a score table that does not match the screen (models, benchmarks, constant or
        missing scores), an inconsistent screen store, or a memory limit that cannot fit one benchmark.
    """
    _check_options(method, screen_method, covariate, delta, max_features, lasso_alpha, screen)
    y_all = _aligned_scores(screen, score)
    benchmarks = [str(b) for b in screen["benchmark"].values]
    nll = screen["candidate_nll"].transpose("model", "candidate")
    m = nll.sizes["model"]
    union = _candidate_axis(screen)
    n_max = 2 * screen.sizes["rank"]  # both tails full: the most candidates a benchmark can have
    plan = plan_selection(memory_limit, m, max(n_max, 1), method=method, loocv=loocv, n_tasks=len(benchmarks),
                          driver_bytes=union.nbytes)
    if workers is not None:
        plan = SelectPlan(max(1, min(plan.workers, int(workers))), plan.cache, plan.fold_batch, plan.task_bytes,
                          plan.memory_limit)

    def run(i: int) -> tuple[np.ndarray, BenchmarkSelection]:
        tokens, cols = benchmark_candidates(screen, benchmarks[i], screen_method, union)
        y = np.asarray(y_all.sel(benchmark=benchmarks[i]).values, dtype=np.float64)
        result = select_benchmark(
            _GatheredColumns(nll, cols), y, method=method, delta=delta, max_features=max_features,
            covariate=covariate, seed=seed, index=i, loocv=loocv, lasso_alpha=lasso_alpha, plan=plan,
        )
        if on_benchmark is not None:
            on_benchmark(benchmarks[i])
        return tokens, result

    done = _run_pool(run, len(benchmarks), plan.workers)
    ds = _build_output([r for _, r in done], [t for t, _ in done], benchmarks, y_all)
    ds.attrs.update(
        method=method, screen_method=screen_method, covariate=covariate, delta=float(delta), seed=int(seed),
        max_features=-1 if max_features is None else int(max_features), loocv=bool(loocv),
        loocv_scope="selection rerun per left-out model; screening used all models",
        plan=plan.describe(),
    )
    if method == "lasso":
        ds.attrs["lasso_alpha"] = float(lasso_alpha)
    for key in ("alpha", "ties", "n_tokens", "k"):
        if key in screen.attrs:
            ds.attrs[f"screen_{key}"] = screen.attrs[key]
    return ds


def _run_pool(run: Callable[[int], Any], n: int, workers: int) -> list[Any]:
    """Run ``run(i)`` for all benchmarks on ``workers`` threads, BLAS pinned to one thread.

    The kernel's products are thin (2 or 2(m+1) rows × m) and memory-bound: OpenBLAS threads do not
    speed them up and, on a busy machine, their spin-waiting made one benchmark 5-10x slower
    (measured: 1.64 s vs 0.17 s for 5e4 candidates).  Parallelism comes from benchmarks instead.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1 or n <= 1:
            return [run(i) for i in range(n)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(run, range(n)))


def _build_output(
    results: list[BenchmarkSelection], candidates: list[np.ndarray], benchmarks: list[str], y_all: xr.DataArray
) -> xr.Dataset:
    B = len(benchmarks)
    S = max([r.columns.size for r in results] + [1])
    token = np.full((B, S), -1, dtype=np.int64)
    aic = np.full((B, S), np.nan)
    coef = np.full((B, S), np.nan)
    for b, (r, tokens) in enumerate(zip(results, candidates)):
        k = r.columns.size
        token[b, :k] = tokens[r.columns]
        aic[b, :k] = r.aic
        coef[b, :k] = r.coefficient
    summary = lambda attr: np.array([getattr(r, attr) for r in results], dtype=np.float64)  # noqa: E731
    bench_coords = {name: c.values for name, c in y_all.coords.items() if c.dims == ("benchmark",) and name != "benchmark"}
    ds = xr.Dataset(
        {
            "signature_token": (("benchmark", "step"), token),
            "aic": (("benchmark", "step"), aic),
            "coefficient": (("benchmark", "step"), coef),
            "intercept": ("benchmark", summary("intercept")),
            "r2": ("benchmark", summary("r2")),
            "r2_adj": ("benchmark", summary("r2_adj")),
            "loocv_r2": ("benchmark", summary("loocv_r2")),
            "aic_null": ("benchmark", summary("aic_null")),
            "n_selected": ("benchmark", np.array([r.columns.size for r in results], dtype=np.int64)),
            "n_candidates": ("benchmark", np.array([c.size for c in candidates], dtype=np.int64)),
        },
        coords={"benchmark": benchmarks, "step": np.arange(S), **{k: ("benchmark", v) for k, v in bench_coords.items()}},
    )
    ds["signature_token"].attrs["description"] = "selected token ids in selection order, -1 padded"
    ds["aic"].attrs["description"] = "AIC (statsmodels OLS with intercept) after each step, NaN padded"
    ds["coefficient"].attrs["description"] = "coefficients of the final fit on the covariate scale, NaN padded"
    ds["loocv_r2"].attrs["description"] = "leave-one-model-out R2 of the whole selection (screen not refit)"
    ds["aic_null"].attrs["description"] = "AIC of the intercept-only model"
    return ds


def attach_contexts(signatures: xr.Dataset, corpus_path: Any) -> xr.Dataset:
    """Add ``context`` and ``target`` (benchmark, step) text of every signature token.

    Parameters
    ----------
    signatures
        Output of :func:`select_signatures`.
    corpus_path
        ``corpus.zarr`` (or an open :class:`bsig_array.corpus.Corpus`) whose features are the
        perplexity store's token ids.

    Returns
    -------
    xr.Dataset
        A copy with ``context`` (≤ 30 preceding pieces) and ``target``; padding gets empty strings.
    """
    from bsig_array.corpus import feature_context

    token = np.asarray(signatures["signature_token"].values)
    contexts, targets = feature_context(corpus_path, token.ravel())
    shape = token.shape
    out = signatures.copy()
    out["context"] = (("benchmark", "step"), np.array(contexts, dtype=object).reshape(shape))
    out["target"] = (("benchmark", "step"), np.array(targets, dtype=object).reshape(shape))
    out["context"].attrs["description"] = "the token's preceding pieces (at most the corpus's context_pieces)"
    out["target"].attrs["description"] = "the token's target piece"
    return out


# ----------------------------------------------------------------------------- I/O


def open_screen(path: str | os.PathLike) -> xr.Dataset:
    """Open a screen output store (lazy), or raise BsigError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise BsigError(f"screen store {path} does not exist; run bsig screen first or fix --screen")
    try:
        ds = xr.open_zarr(path)
    except Exception as exc:  # zarr raises many types for a non-store directory
        raise BsigError(f"{path} is not a readable screen store ({type(exc).__name__}); pass the output of bsig screen") from None
    for var in ("candidate_token", "candidate_nll"):
        if var not in ds:
            raise BsigError(f"{path} has no {var!r}; pass the output of bsig screen")
    return ds


def write_signatures(ds: xr.Dataset, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write signatures to ``out`` (Zarr v3) atomically: a temporary directory renamed at the end."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BsigError(f"output {out} already exists; pass --overwrite to replace it or pick another path")
    # Variable-length strings (object) have a Zarr v3 spec; fixed-width numpy unicode does not.
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind in "UT":
            ds[name] = var.astype(object)
    with atomic_output(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
    return out
