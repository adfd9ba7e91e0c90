"""The screen output ``screen.zarr``: its schema, writer and readers (docs/DESIGN.md §3).

Variables (dims use the names of :mod:`bsig_array.schema`)::

    candidate_token   (coefficient, benchmark, tail, rank)  int64    token ids kept per tail, sorted by id
    candidate_score   (coefficient, benchmark, tail, rank)  float64  γ (thrush) or η (preselect) of each
    threshold         (coefficient, benchmark, tail)        float64  score at each tail's boundary
    histogram_thrush  (benchmark, thrush_bin)               int64    exact counts of γ
    histogram_preselect (benchmark, preselect_bin)          int64    exact counts of η·Z
    candidate_column  (coefficient, benchmark, tail, rank)  int64    each candidate's position on the candidate axis
    candidate_nll     (model, candidate)                    float32  NLL columns of the union of candidates
    null_exceedances, null_fdr (coefficient, benchmark)              with --null-permutations

Select a coefficient with ``ds.sel(coefficient="thrush")``.  The screen stage streams its result
into the store with :class:`ScreenStoreWriter` (region by region, one writer per Zarr chunk, so no
candidate array is ever whole in memory); :func:`build_screen` (and :func:`add_null_estimates`)
assemble a result in memory and :func:`write_screen` writes one.  :func:`open_screen` and
:func:`load_screen_summary` read it back (the candidate axis is not loaded as an index: it can be as
long as the pool), :func:`benchmark_candidates` gives one benchmark's candidates and their
``candidate_nll`` columns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.zarr_format import open_artifact, quiet_zarr, strings, write_zarr, zarr_array
from bsig_array.kernels.unique import sorted_unique
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import BENCHMARK, CANDIDATE, COEFFICIENT, COEFFICIENTS, MODEL, RANK, TAIL, TAILS

#: Largest chunk of the rank axis of the candidate arrays.
MAX_RANK_CHUNK = 1 << 18
#: Chunk length of the candidate axis of ``candidate_nll`` (the screen's and selection's cost models count it).
CANDIDATE_CHUNK = 1 << 16
#: Bytes of one tail write job: whole tails of as many benchmarks as fit, gathered and written at once.
TAIL_JOB_BYTES = 8 * 2**20
#: Bytes of one tail entry: ``candidate_token`` + ``candidate_score`` + ``candidate_column`` (int64, float64, int64).
CANDIDATE_ENTRY_BYTES = 24
#: Bytes of one stored NLL value of ``candidate_nll`` (float32).
CANDIDATE_NLL_BYTES = 4
#: Variables every screen output has (the histograms depend on the coefficients screened).
REQUIRED = ("candidate_token", "candidate_score", "threshold", "candidate_nll")
#: The artifact kind (docs/DESIGN.md §3): a Zarr store, marked by ``candidate_token``.
SCREEN_OUTPUT = register_kind(ArtifactKind(
    "screen output", owner=__name__, precedence=10, zarr=True, directory=True, markers=(("candidate_token",),)))
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
    column: np.ndarray | None = None,
) -> xr.Dataset:
    """Assemble a screen output in memory (the screen stage streams with :class:`ScreenStoreWriter`).

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
    column
        (coefficient, benchmark, 2, k) position of each candidate on ``candidate`` (default: looked up).
    """
    coords: dict[str, Any] = {
        name: (BENCHMARK, strings(c.values) if c.dtype.kind in "OUS" else c.values) for name, c in benchmark_coords.items()
    }
    if column is None:
        column = np.searchsorted(candidate, token)
    ds = xr.Dataset(
        {
            "candidate_token": (_TAILS_DIMS, token),
            "candidate_score": (_TAILS_DIMS, score),
            "candidate_column": (_TAILS_DIMS, column),
            "threshold": (_TAILS_DIMS[:-1], threshold),
        },
        coords={COEFFICIENT: strings(coefficients), TAIL: strings(TAILS), MODEL: strings(models), **coords},
    )
    _describe(ds)
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
    _describe(ds)
    return ds


_DESCRIPTIONS = {
    "candidate_token": "token ids kept in each tail, sorted by id (exactly k per tail)",
    "candidate_score": "gamma (thrush) or eta (preselect) of each candidate",
    "candidate_column": "position of each candidate on the candidate axis (column of candidate_nll)",
    "threshold": "score at each tail's boundary (ties there broken by lowest token id)",
    "candidate_nll": "NLL columns of the union of candidates (coord candidate = token id)",
}


def _describe(ds: xr.Dataset) -> None:
    for name, text in _DESCRIPTIONS.items():
        if name in ds:
            ds[name].attrs["description"] = text


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
    scheduler: Any = DEFAULTS.scheduler,
    workers: int | None = None,
    progress: Progress = no_progress,
) -> Path:
    """Write a screen result held in memory (or lazily) to ``out`` (Zarr v3), atomically: temp
    directory, then rename.  The screen stage streams its own output (``screen(..., out=...)``);
    this writes a dataset assembled with :func:`build_screen` or a loaded result.  Lazy variables
    are computed on threads with ``workers`` concurrency, or in the calling thread when
    ``scheduler`` is ``"synchronous"``.
    """
    out = check_new_output(out, overwrite=overwrite, what="screen output", kind=SCREEN_OUTPUT)
    n_workers = workers or ds.attrs.get("workers")
    encoding = {"candidate_nll": {"chunks": (ds.sizes[MODEL], min(CANDIDATE_CHUNK, max(ds.sizes[CANDIDATE], 1)))}}
    with atomic_output(out) as tmp:
        delayed = write_zarr(ds, tmp, encoding=encoding, compute=False, all_chunks=True)
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


class ScreenStoreWriter:
    """Streams a screen output into a Zarr store: small variables at once, candidates region by region.

    The thresholds, histograms and coordinates are written by xarray when the writer is created;
    the candidate arrays are created at full size and filled chunk by chunk by :meth:`write_tails`
    and :meth:`write_candidates`, whose ``load`` callables gather one chunk's values and run with
    the write on the writer's threads (Blosc releases the GIL).  So every Zarr chunk is written
    once, whole, by one writer, and memory holds only the chunks in flight (at most two per thread,
    :data:`TAIL_JOB_BYTES` each for the tails), never the candidate
    arrays.  :meth:`close` waits for the writes and consolidates the metadata.

    Parameters
    ----------
    path
        Directory to write (normally the temporary sibling of :func:`~bsig_array.io.atomic.atomic_output`).
    summary
        The small part of the output: coordinates, ``threshold``, histograms, null estimates, attrs.
    k
        Candidates per tail (length of ``rank``).
    n_candidates
        Length of the candidate axis.
    threads
        Threads compressing and writing chunks.
    """

    def __init__(
        self, path: str | os.PathLike, summary: xr.Dataset, *, k: int, n_candidates: int, threads: int = 2,
    ) -> None:
        import zarr
        from zarr.codecs import BloscCodec

        C, B = summary.sizes[COEFFICIENT], summary.sizes[BENCHMARK]
        m = summary.sizes[MODEL]
        self.path, self.k, self.m, self.n_benchmarks = str(path), int(k), int(m), int(B)
        # a tail chunk is (1, bench_chunk, 2, rank_chunk): whole tails of as many benchmarks as fit
        # one job's buffers (zarr's per-write cost, ~3 ms, rules out many small chunks)
        self.rank_chunk = min(self.k, MAX_RANK_CHUNK)
        self.bench_chunk = int(max(1, min(B, TAIL_JOB_BYTES // (2 * self.rank_chunk * CANDIDATE_ENTRY_BYTES))))
        cand_chunk = min(CANDIDATE_CHUNK, max(n_candidates, 1))
        template = summary.copy()
        placeholder = {"candidate_token": np.int64, "candidate_score": np.float64, "candidate_column": np.int64}
        for name, dtype in placeholder.items():
            template[name] = (_TAILS_DIMS, np.zeros((C, B, 2, 1), dtype=dtype))
        template["candidate_nll"] = ((MODEL, CANDIDATE), np.zeros((m, 1), dtype=np.float32))
        template = template.assign_coords({CANDIDATE: np.zeros(1, dtype=np.int64)})
        _describe(template)
        fast = {"compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]}  # written once, read often
        tail_chunks = (1, self.bench_chunk, 2, self.rank_chunk)
        encoding: dict[str, Any] = {name: {"chunks": tail_chunks, **fast} for name in placeholder}
        encoding["candidate_nll"] = {"chunks": (m, cand_chunk), **fast}
        encoding[CANDIDATE] = {"chunks": (cand_chunk,), **fast}
        write_zarr(template, self.path, encoding=encoding, all_chunks=True)  # a deleted chunk is then damage
        with quiet_zarr():
            group = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            self._arrays = {
                name: zarr_array(group, name).with_config({"write_empty_chunks": True})  # type: ignore[call-overload]  # partial config: rest inherited
                for name in (*placeholder, "candidate_nll", CANDIDATE)
            }
        for name in placeholder:
            self._arrays[name].resize((C, B, 2, self.k))
        self._arrays["candidate_nll"].resize((m, n_candidates))
        self._arrays[CANDIDATE].resize((n_candidates,))
        self.cand_chunk = cand_chunk
        self.n_candidates = int(n_candidates)
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="bsig-write")
        self._slots = threading.BoundedSemaphore(2 * max(1, threads))  # jobs queued or running
        self._futures: list[Future] = []

    def _run(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the writer's threads (at most two per thread queued or running)."""
        self._slots.acquire()
        future = self._pool.submit(job)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)
        if len(self._futures) > 64:
            self._reap()

    def _reap(self) -> None:
        running = []
        for f in self._futures:
            if f.done():
                f.result()  # re-raise a failed write here
            else:
                running.append(f)
        self._futures = running

    def tail_blocks(self) -> Iterator[tuple[int, int, int, int]]:
        """``(b0, b1, r0, r1)`` of every tail chunk of one coefficient (benchmarks b0:b1, ranks r0:r1)."""
        for b0 in range(0, self.n_benchmarks, self.bench_chunk):
            for r0 in range(0, self.k, self.rank_chunk):
                yield b0, min(b0 + self.bench_chunk, self.n_benchmarks), r0, min(r0 + self.rank_chunk, self.k)

    def write_tails(
        self, c: int, block: tuple[int, int, int, int], load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """Write one tail chunk of coefficient ``c`` (a ``block`` of :meth:`tail_blocks`) from
        ``load() -> (token, score, column)``, each (b1 - b0, 2, r1 - r0), on the writer's threads."""
        b0, b1, r0, r1 = block

        def job() -> None:
            arrays = dict(zip(("candidate_token", "candidate_score", "candidate_column"), load()))
            with quiet_zarr():
                for name, values in arrays.items():
                    self._arrays[name][c, b0:b1, :, r0:r1] = values

        self._run(job)

    def write_candidates(self, start: int, stop: int, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Write candidates ``start:stop`` (one whole chunk of the candidate axis, or the last one) from
        ``load() -> (ids, nll (model, n))``, run on the writer's threads: gathering the columns and
        compressing them proceed in parallel, and every chunk still has exactly one writer."""
        if start % self.cand_chunk or (stop - start != self.cand_chunk and stop != self.n_candidates):
            raise ValueError(f"candidates {start}:{stop} are not one chunk of {self.cand_chunk}")

        def job() -> None:
            ids, nll = load()
            with quiet_zarr():
                self._arrays[CANDIDATE][start:stop] = ids
                self._arrays["candidate_nll"][:, start:stop] = nll

        self._run(job)

    def wait(self) -> None:
        """Wait for every write (re-raising the first failure)."""
        self._pool.shutdown(wait=True)
        self._reap()

    def close(self, attrs: Mapping[str, Any]) -> None:
        """Wait for every write, set ``attrs`` and consolidate the metadata."""
        import zarr

        self.wait()
        with quiet_zarr():
            group = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            group.attrs.update(dict(attrs))
            zarr.consolidate_metadata(self.path)

    def abort(self) -> None:
        """Stop the write pool after a failure (the caller removes the directory)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _open(path: str | os.PathLike | Location) -> xr.Dataset:
    return open_artifact(
        path, what="screen store", command="bsig screen", index_except=(CANDIDATE,), complete=("candidate_nll",)
    )


def open_screen(path: str | os.PathLike | Location) -> xr.Dataset:
    """Open a screen output store (lazy; a path or URL), or raise :class:`~bsig_array.errors.InputError`
    naming the problem."""
    ds = _open(path)
    for var in ("candidate_token", "candidate_nll"):
        if var not in ds:
            raise InputError(f"{as_location(path)} has no {var!r}; pass the output of bsig screen")
    return ds


def load_screen_summary(path: str | os.PathLike | Location) -> xr.Dataset:
    """The screen output without ``candidate_nll``, loaded into memory (thresholds, histograms, tails)."""
    ds = _open(path)
    if not any(histogram_name(c) in ds for c in COEFFICIENTS):
        raise InputError(f"{as_location(path)} has no coefficient histograms; pass the output of bsig screen")
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
        The screen's ``candidate`` axis (:func:`candidate_axis`), only needed for outputs written
        before ``candidate_column`` existed (it is loaded when missing).

    Returns
    -------
    tokens, columns
        int64 arrays of equal length.
    """
    where = {COEFFICIENT: coefficient, BENCHMARK: benchmark}
    tokens = np.asarray(screen["candidate_token"].sel(where).values).ravel().astype(np.int64)
    if "candidate_column" in screen:
        cols = np.asarray(screen["candidate_column"].sel(where).values).ravel().astype(np.int64)
        tokens, first = np.unique(tokens, return_index=True)
        cols = cols[first]
        n = screen.sizes[CANDIDATE]
        if tokens.size and (cols.min() < 0 or cols.max() >= n):
            raise InputError(
                f"screen store is inconsistent: a candidate of {benchmark} points outside candidate_nll "
                f"({n} columns); rerun bsig screen"
            )
        return tokens, cols
    tokens = sorted_unique(tokens[tokens >= 0])
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
