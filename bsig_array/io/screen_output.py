"""The screen output ``screen.zarr``: its schema, writer and readers (docs/DESIGN.md §3).

Variables (dims use the names of :mod:`bsig_array.schema`)::

    candidate_token   (coefficient, benchmark, tail, rank)  int64    token ids kept per tail, sorted by id
    candidate_score   (coefficient, benchmark, tail, rank)  float64  γ (thrush) or η (preselect) of each
    threshold         (coefficient, benchmark, tail)        float64  score at each tail's boundary
    histogram_thrush  (benchmark, thrush_bin)               int64    exact counts of γ
    histogram_preselect (benchmark, preselect_bin)          int64    exact counts of η·Z
    candidate_nll     (model, candidate)                    float32  NLL columns of the union of candidates
    null_exceedances, null_fdr (coefficient, benchmark)              with --null-permutations

Select a coefficient with ``ds.sel(coefficient="thrush")``.  The screen stage builds the dataset
with :func:`build_screen` (and :func:`add_null_estimates`), :func:`write_screen` writes it;
:func:`open_screen` and :func:`load_screen_summary` read it back, :func:`benchmark_candidates`
gives one benchmark's candidates and their ``candidate_nll`` columns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.zarr_format import open_artifact, quiet_zarr, strings, write_zarr
from bsig_array.kernels.unique import sorted_unique
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import BENCHMARK, CANDIDATE, COEFFICIENT, COEFFICIENTS, MODEL, RANK, TAIL, TAILS

#: Chunk length of the candidate axis of ``candidate_nll`` in the output store.
CANDIDATE_CHUNK = 1 << 16
#: Variables every screen output has (the histograms depend on the coefficients screened).
REQUIRED = ("candidate_token", "candidate_score", "threshold", "candidate_nll")
_TAILS_DIMS = (COEFFICIENT, BENCHMARK, TAIL, RANK)


def histogram_name(coefficient: str) -> str:
    """Name of the histogram variable of ``coefficient`` (its bin dimension is ``<coefficient>_bin``)."""
    return f"histogram_{coefficient}"


def build_screen(
    *,
    models: Sequence[str],
    benchmark_coords: Mapping[str, xr.DataArray],
    coefficients: Sequence[str],
    token: np.ndarray,
    score: np.ndarray,
    threshold: np.ndarray,
    histograms: Mapping[str, tuple[np.ndarray, np.ndarray]],
    candidate: np.ndarray,
    candidate_nll: Any,
) -> xr.Dataset:
    """Assemble a screen output.

    Parameters
    ----------
    models
        Model names, store order.
    benchmark_coords
        Coordinates along ``benchmark`` (the benchmark names and their metadata).
    coefficients
        Coefficients screened, output order.
    token, score
        (coefficient, benchmark, 2, k) candidate token ids and scores.
    threshold
        (coefficient, benchmark, 2) boundary scores.
    histograms
        Per coefficient: (bin values, counts (benchmark, bin)).
    candidate
        Sorted distinct token ids of all candidates.
    candidate_nll
        (model, candidate) float32 NLL columns (numpy or a lazy dask array).
    """
    coords: dict[str, Any] = {
        name: (BENCHMARK, strings(c.values) if c.dtype.kind in "OUS" else c.values) for name, c in benchmark_coords.items()
    }
    ds = xr.Dataset(
        {
            "candidate_token": (_TAILS_DIMS, token),
            "candidate_score": (_TAILS_DIMS, score),
            "threshold": (_TAILS_DIMS[:-1], threshold),
        },
        coords={COEFFICIENT: strings(coefficients), TAIL: strings(TAILS), MODEL: strings(models), **coords},
    )
    ds["candidate_token"].attrs["description"] = "token ids kept in each tail, sorted by id (exactly k per tail)"
    ds["candidate_score"].attrs["description"] = "gamma (thrush) or eta (preselect) of each candidate"
    ds["threshold"].attrs["description"] = "score at each tail's boundary (ties there broken by lowest token id)"
    for coef in coefficients:
        bins, counts = histograms[coef]
        name = histogram_name(coef)
        ds[name] = ((BENCHMARK, f"{coef}_bin"), counts)
        ds = ds.assign_coords({f"{coef}_bin": bins})
        ds[name].attrs["description"] = (
            "exact counts of gamma over its half-integer lattice" if coef == "thrush" else "exact counts of eta*Z over 0..Z"
        )
    ds["candidate_nll"] = ((MODEL, CANDIDATE), candidate_nll)
    ds = ds.assign_coords({CANDIDATE: candidate})
    ds["candidate_nll"].attrs["description"] = "NLL columns of the union of candidates (coord candidate = token id)"
    return ds


def add_null_estimates(ds: xr.Dataset, exceedances: np.ndarray, k: int) -> xr.Dataset:
    """Add ``null_exceedances`` (coefficient, benchmark) and ``null_fdr`` = exceedances / 2k, capped at 1."""
    ds["null_exceedances"] = ((COEFFICIENT, BENCHMARK), exceedances)
    ds["null_exceedances"].attrs["description"] = (
        "mean over label permutations of the tokens the screen's tail rule would keep from the null "
        "(strictly beyond the boundary, plus the boundary count times the observed take fraction)"
    )
    ds["null_fdr"] = ((COEFFICIENT, BENCHMARK), np.minimum(exceedances / (2 * k), 1.0))
    ds["null_fdr"].attrs["description"] = "null_exceedances / (2k), capped at 1: estimated FDR of both tails"
    return ds


def write_screen(
    ds: xr.Dataset,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    scheduler: Any = "threads",
    workers: int | None = None,
    progress: Progress = no_progress,
) -> Path:
    """Write a screen result to ``out`` (Zarr v3), atomically: temp directory, then rename.

    The lazy ``candidate_nll`` gather runs here, in this process (it reads the driver's column
    spill, which remote workers cannot see) on threads with the plan's concurrency, or in the
    calling thread when ``scheduler`` is ``"synchronous"``; any other ``scheduler`` value (a
    distributed address or client) is accepted for symmetry with the screen stage.
    """
    out = check_new_output(out, overwrite=overwrite)
    n_workers = workers or ds.attrs.get("workers")
    encoding = {"candidate_nll": {"chunks": (ds.sizes[MODEL], min(CANDIDATE_CHUNK, max(ds.sizes[CANDIDATE], 1)))}}
    with atomic_output(out) as tmp:
        delayed = write_zarr(ds, tmp, encoding=encoding, compute=False)
        _compute_with_progress(delayed, scheduler, n_workers, progress)
    return out


def _compute_with_progress(delayed: Any, scheduler: Any, workers: int | None, progress: Progress) -> None:
    from dask.callbacks import Callback

    (delayed,) = dask.optimize(delayed)  # count the tasks that will run (the write fuses some)
    n_tasks = len(delayed.__dask_graph__())
    with progress("screen gather candidate_nll", total=n_tasks, unit="tasks") as bar:

        class _Advance(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.advance(1)

        # The gather reads the spill and the write compresses, which release the GIL: threads, never processes.
        kwargs: dict[str, Any] = {"scheduler": "synchronous" if scheduler == "synchronous" else "threads"}
        if workers and scheduler != "synchronous":
            kwargs["num_workers"] = workers
        with _Advance(), quiet_zarr():
            dask.compute(delayed, **kwargs)


def _open(path: str | os.PathLike) -> xr.Dataset:
    return open_artifact(path, what="screen store", command="bsig screen")


def open_screen(path: str | os.PathLike) -> xr.Dataset:
    """Open a screen output store (lazy), or raise :class:`~bsig_array.errors.InputError` naming the problem."""
    ds = _open(path)
    for var in ("candidate_token", "candidate_nll"):
        if var not in ds:
            raise InputError(f"{path} has no {var!r}; pass the output of bsig screen")
    return ds


def load_screen_summary(path: str | os.PathLike) -> xr.Dataset:
    """The screen output without ``candidate_nll``, loaded into memory (thresholds, histograms, tails)."""
    ds = _open(path)
    if not any(histogram_name(c) in ds for c in COEFFICIENTS):
        raise InputError(f"{path} has no coefficient histograms; pass the output of bsig screen")
    return ds.drop_vars("candidate_nll", errors="ignore").load()


def candidate_axis(screen: xr.Dataset) -> np.ndarray:
    """The screen's ``candidate`` axis (sorted distinct token ids), checked."""
    union = np.asarray(screen["candidate_nll"][CANDIDATE].values, dtype=np.int64)
    if union.size > 1 and np.any(np.diff(union) <= 0):
        raise InputError("screen store's candidate axis is not sorted and unique; rerun bsig screen")
    return union


def benchmark_candidates(
    screen: xr.Dataset, benchmark: str, coefficient: str, union: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of one benchmark's candidates (both tails, sorted) and their ``candidate_nll`` columns.

    Parameters
    ----------
    screen
        Screen output.
    benchmark, coefficient
        Which benchmark and which coefficient's tails.
    union
        The screen's ``candidate`` axis (:func:`candidate_axis`), if already loaded.

    Returns
    -------
    tokens, columns
        int64 arrays of equal length.
    """
    tokens = np.asarray(screen["candidate_token"].sel({COEFFICIENT: coefficient, BENCHMARK: benchmark}).values).ravel()
    tokens = sorted_unique(tokens[tokens >= 0].astype(np.int64))
    union = candidate_axis(screen) if union is None else union
    cols = np.searchsorted(union, tokens)
    ok = cols < union.size
    ok[ok] = union[cols[ok]] == tokens[ok]
    if not ok.all():
        raise InputError(
            f"screen store is inconsistent: token {int(tokens[~ok][0])} of {benchmark} has no candidate_nll "
            "column; rerun bsig screen"
        )
    return tokens, cols.astype(np.int64)
