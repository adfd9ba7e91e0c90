"""Screen stage: out-of-core Thrush and Pre-select with exact tail thresholds (DESIGN §4, §5).

Two streaming passes over the perplexity store, each a set of independent per-chunk tasks run on
a Dask scheduler (:mod:`bsig_array.scheduler`) with the block size and concurrency that
:mod:`bsig_array.memory` derives from ``memory_limit``:

1. **histograms** — every chunk's integer codes (Thrush ``2γ``, Pre-select ``η·Z``) for all
   benchmarks at once are counted on each method's exact lattice; the summed histograms give the
   exact tail boundaries (:func:`bsig_array.kernels.tail_bounds`);
2. **tails** — every chunk's members strictly beyond a boundary, and the lowest token ids *at*
   it, are merged across chunks into exactly ``k = max(floor(alpha·d), 1)`` tokens per tail; label-
   permuted copies of each benchmark (``null_permutations``) are scored in the same pass and
   counted against the observed boundaries.

The result never depends on chunking or scheduling: histograms are sums, tails are order-free
merges with a token-id tie-break.  Pass 2 also hands back the NLL columns of every chunk's tail
members (it holds the decompressed chunk anyway); the driver spills them to a temporary directory
(:class:`ColumnSpill`), so ``candidate_nll`` is a lazy gather of the final candidates from that
spill, never a third read of the store, and the driver's memory does not grow with the columns.
:func:`write_screen` streams it into the output.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from bsig_array import kernels as K
from bsig_array.atomic import atomic_output
from bsig_array.errors import BsigError
from bsig_array.memory import parse_memory, plan_screen
from bsig_array.performance import align_performance
from bsig_array.progress import progress_bar
from bsig_array.scheduler import check_scheduler, describe_scheduler, task_runner
from bsig_array.validation import check_block

METHODS = ("thrush", "preselect")
TAILS = ("low", "high")
DEVICES = ("auto", "cpu", "gpu")
#: Chunk length of the candidate axis of ``candidate_nll`` in the output store.
CANDIDATE_CHUNK = 1 << 16
#: Fold the chunks' at-boundary members into one part once this many are held (bounds driver memory).
_COMPACT_EVERY = 8
#: Names of the four member sets of a :class:`~bsig_array.kernels.TailMembers`.
_SETS = ("low_beyond", "low_at", "high_beyond", "high_at")


# ----------------------------------------------------------------------------- inputs


def resolve_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """``"both"``/``"thrush"``/``"preselect"`` or a sequence of method names → ordered tuple."""
    if isinstance(methods, str):
        methods = METHODS if methods == "both" else (methods,)
    out = tuple(dict.fromkeys(str(m) for m in methods))
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise BsigError(f"unknown screening method(s) {bad or list(out)}; use thrush, preselect or both")
    return tuple(m for m in METHODS if m in out)


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"gpu"`` for ``--device auto|cpu|gpu`` (gpu = CuPy on an available GPU)."""
    if device not in DEVICES:
        raise BsigError(f"unknown device {device!r}; use auto, cpu or gpu")
    if device == "cpu":
        return "cpu"
    available = _cupy_available()
    if device == "gpu" and not available:
        raise BsigError("--device gpu needs CuPy and a visible CUDA GPU (pip install 'bsig-array[gpu]'); use --device cpu")
    return "gpu" if available else "cpu"


def _cupy_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # a broken CUDA install counts as no GPU
        return False


def _check_alpha(alpha: float, n_tokens: int) -> int:
    try:
        ok = 0.0 < float(alpha) < 0.5  # False for NaN
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BsigError(f"alpha must be in (0, 0.5) (the fraction kept per tail), got {alpha}; e.g. --alpha 0.01")
    if n_tokens < 2:
        raise BsigError(f"the store has {n_tokens} token(s); screening needs at least 2")
    return K.tail_size(float(alpha), n_tokens)


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


# ----------------------------------------------------------------------------- tasks


class ChunkSource:
    """One token chunk of the store, loaded inside the task that scores it.

    Dask arrays sit inside this plain object (dask traverses lists, dicts and dataclasses, not
    arbitrary objects), so dask does not turn the read into a separate task whose decoded block
    would be held, or travel between processes, before the task runs; the task reads (and
    decompresses) its chunk itself with the synchronous scheduler.
    """

    __slots__ = ("nll", "token", "start", "stop")

    def __init__(self, nll: Any, token: Any, start: int, stop: int) -> None:
        self.nll, self.token, self.start, self.stop = nll, token, start, stop

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nll (m, w), token ids (w,) int64)``."""
        return _materialize(self.nll), self.load_ids()

    def load_ids(self) -> np.ndarray:
        """Token ids (int64) of the chunk; positions when the store has no ``token`` coordinate."""
        if self.token is None:
            return np.arange(self.start, self.stop, dtype=np.int64)
        return _materialize(self.token).astype(np.int64, copy=False)


class ZarrSlice:
    """Token columns ``start:stop`` of one Zarr array, read with zarr itself.

    Reading through xarray decodes the NaN ``_FillValue`` (one more pass and copy per chunk); the
    screen validates every block anyway, so the raw read is equivalent and ~3x faster.  A slice
    that is exactly one chunk of a local Blosc store is decoded straight into its array
    (:func:`_decode_chunk`).
    """

    __slots__ = ("path", "name", "start", "stop")

    def __init__(self, path: str, name: str, start: int, stop: int) -> None:
        self.path, self.name, self.start, self.stop = path, name, start, stop

    def compute(self, scheduler: str | None = None) -> np.ndarray:
        """The columns as numpy (``scheduler`` is accepted for symmetry with dask arrays)."""
        import zarr

        arr = zarr.open_array(self.path, path=self.name, mode="r")
        block = _decode_chunk(arr, self.start, self.stop)
        return arr[:, self.start : self.stop] if block is None else block


def _decode_chunk(arr: Any, start: int, stop: int) -> np.ndarray | None:
    """Columns ``start:stop`` of a Zarr v3 array when they are one whole chunk of a local store
    encoded as bytes + Blosc (the perplexity store's layout), else ``None`` (read it with zarr).

    zarr's own read holds the compressed bytes, the decoded chunk and a copy into the output
    (~2.8x the raw chunk); decompressing straight into the output needs ~1.9x, and skips a copy.
    """
    import sys

    import numcodecs.blosc
    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.storage import LocalStore

    md = arr.metadata
    codecs = getattr(md, "codecs", ())
    if not (
        isinstance(arr.store, LocalStore) and len(codecs) == 2 and isinstance(codecs[0], BytesCodec)
        and isinstance(codecs[1], BloscCodec) and sys.byteorder == "little"
        and getattr(codecs[0].endian, "value", None) in (None, "little")
        and isinstance(arr.dtype, np.dtype) and len(arr.shape) == 2
    ):
        return None
    rows, width = getattr(md.chunk_grid, "chunk_shape", (0, 0))
    if rows != arr.shape[0] or start % width or stop != min(start + width, arr.shape[1]):
        return None
    path = Path(arr.store.root, arr.store_path.path, md.encode_chunk_key((0, start // width)))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:  # never written: zarr fills it
        return None
    out = np.empty((rows, width), dtype=arr.dtype)  # edge chunks are stored full size
    numcodecs.blosc.decompress(raw, out)
    return out[:, : stop - start]


def _direct_store(nll: xr.DataArray, store: str | os.PathLike | None) -> str | None:
    """``store`` if ``nll`` is that store's unmodified ``nll`` array (same shape, models and dtype)."""
    if store is None:
        return None
    import zarr

    try:
        group = zarr.open_group(str(store), mode="r")
        arr = group[nll.name or "nll"]
        models = [str(v) for v in group["model"][:]]
    except Exception:  # not a readable zarr group: fall back to reading through xarray
        return None
    same = (
        arr.shape == nll.shape and arr.dtype == nll.dtype and models == [str(v) for v in nll["model"].values]
    )
    return str(store) if same else None


def _materialize(x: Any) -> np.ndarray:
    if hasattr(x, "compute"):
        x = x.compute(scheduler="synchronous")
    return np.asarray(x)


@dataclass(frozen=True)
class ScreenJob:
    """What every task needs besides its chunk (shipped with each task; small)."""

    methods: tuple[str, ...]
    Y: np.ndarray  # (B, m) observed scores, store model order
    Y_null: np.ndarray  # (N·B, m) label-permuted copies (0 rows without --null-permutations)
    ties: str
    block_tokens: int
    backend: str
    models: tuple[str, ...]
    path: str
    threads: int = 0  # numba threads per task (0: numba's default); avoids oversubscribing the cores
    bounds: dict[str, K.TailBounds] = field(default_factory=dict)


def _xp(job: ScreenJob) -> Any:
    """Array namespace of the job's device; on CPU also caps this thread's numba threads."""
    if job.backend == "cupy":
        import cupy

        return cupy
    if job.threads:
        import numba

        numba.set_num_threads(min(job.threads, numba.config.NUMBA_NUM_THREADS))  # thread-local setting
    return np


def _codes(P: Any, Y: Any, job: ScreenJob) -> dict[str, Any]:
    """Codes (rows, n) of each method; both at once share the pairwise comparisons."""
    if len(job.methods) == 2:
        return K.screen_codes(P, Y, job.ties, backend=job.backend)
    if job.methods == ("thrush",):
        return {"thrush": K.thrush_codes(P, Y, job.ties, backend=job.backend)}
    return {"preselect": K.preselect_codes(P, Y, backend=job.backend)}


def _host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _blocks(block: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    w = block.shape[1]
    for s in range(0, w, size):
        yield s, min(s + size, w)


def _load_checked(source: ChunkSource, job: ScreenJob) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Read one chunk and reject NaN/inf in it; return the block, its token ids and the timings."""
    times = dict.fromkeys(("read", "check", "codes", "count"), 0.0)
    t0 = time.perf_counter()
    block, ids = source.load()
    times["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_block(block, job.models, source.start, path=job.path)
    times["check"] = time.perf_counter() - t0
    return block, ids, times


def histogram_task(source: ChunkSource, job: ScreenJob) -> dict[str, Any]:
    """Pass 1 on one chunk: exact code histograms of the observed benchmarks, per method."""
    xp = _xp(job)
    block, ids, times = _load_checked(source, job)
    increasing = bool(np.all(ids[1:] > ids[:-1]))
    m = block.shape[0]
    Y = xp.asarray(job.Y)
    hist = {meth: None for meth in job.methods}
    for s, e in _blocks(block, job.block_tokens):
        P = xp.asarray(np.ascontiguousarray(block[:, s:e]))
        t0 = time.perf_counter()
        codes = _codes(P, Y, job)
        t1 = time.perf_counter()
        for meth in job.methods:
            hist[meth] = K.histogram_codes(codes[meth], meth, m, out=hist[meth], backend=job.backend)
        times["codes"] += t1 - t0
        times["count"] += time.perf_counter() - t1
    return {
        "hist": {meth: _host(h) for meth, h in hist.items()}, "tokens": block.shape[1], "times": times,
        "ids": (source.start, int(ids[0]), int(ids[-1]), increasing),
    }


def tails_task(source: ChunkSource, job: ScreenJob) -> dict[str, Any]:
    """Pass 2 on one chunk: tail members (and null-row counts) against the final boundaries.

    Returns the chunk's :class:`~bsig_array.kernels.TailMembers` per method (host arrays, one
    part per chunk), per null row the counts strictly beyond / at each boundary, and the NLL
    columns (float32) of the union of the members with their token ids (sorted): every final
    candidate is a member of its chunk, so no later pass has to read the store again.
    """
    xp = _xp(job)
    block, ids, times = _load_checked(source, job)
    B = job.Y.shape[0]
    n_null = job.Y_null.shape[0]
    Y = xp.asarray(np.concatenate([job.Y, job.Y_null]) if n_null else job.Y)
    parts: dict[str, list[K.TailMembers]] = {meth: [] for meth in job.methods}
    null = {meth: np.zeros((n_null, 4), dtype=np.int64) for meth in job.methods}
    n_perm = n_null // B if B else 0
    # each permuted copy is judged against its own benchmark's observed boundaries
    edges = {
        meth: (xp.asarray(np.tile(job.bounds[meth].low_code, n_perm)), xp.asarray(np.tile(job.bounds[meth].high_code, n_perm)))
        for meth in job.methods
    }
    for s, e in _blocks(block, job.block_tokens):
        P = xp.asarray(np.ascontiguousarray(block[:, s:e]))
        sub_ids = xp.asarray(ids[s:e])
        t0 = time.perf_counter()
        codes = _codes(P, Y, job)
        t1 = time.perf_counter()
        for meth in job.methods:
            members = K.tail_members(codes[meth][:B], sub_ids, job.bounds[meth], backend=job.backend)
            parts[meth].append(_members_to_host(members))
            if n_null:
                low, high = edges[meth]
                null[meth] += _host(K.tail_counts(codes[meth][B:], low, high, backend=job.backend)).astype(np.int64)
        times["codes"] += t1 - t0
        times["count"] += time.perf_counter() - t1
    members = {meth: compact_members(p, job.bounds[meth]) for meth, p in parts.items()}
    t0 = time.perf_counter()
    sel, pos = _member_columns([getattr(mb, name).token for mb in members.values() for name in _SETS], ids)
    columns = np.take(block, pos, axis=1).astype(np.float32, copy=False)
    times["columns"] = time.perf_counter() - t0
    return {
        "members": members, "null": null, "tokens": block.shape[1], "times": times,
        "columns": (source.start, sel, columns),
    }


def _member_columns(tokens: list[np.ndarray], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct token ids among ``tokens`` (sorted) and their column positions in the chunk's ``ids``."""
    w = ids.size
    if w and int(ids[-1]) - int(ids[0]) == w - 1 and np.all(ids[1:] > ids[:-1]):
        # ids are a contiguous range (the default: positions): a mask replaces sorting and searching
        mask = np.zeros(w, dtype=bool)
        for tok in tokens:
            mask[tok - ids[0]] = True
        pos = np.flatnonzero(mask)
        return ids[pos], pos
    sel = _sorted_unique(np.concatenate(tokens))
    if w < 2 or np.all(ids[1:] > ids[:-1]):
        return sel, np.searchsorted(ids, sel)
    order = np.argsort(ids, kind="stable")
    return sel, order[np.searchsorted(ids, sel, sorter=order)]


def locate_task(source: ChunkSource, union: np.ndarray) -> np.ndarray:
    """Token ids of ``union`` (sorted) found in this chunk's token coordinate."""
    ids = source.load_ids()
    idx = np.minimum(np.searchsorted(union, ids), max(union.size - 1, 0))
    return ids[union[idx] == ids] if union.size else np.empty(0, dtype=np.int64)


def _members_to_host(mb: K.TailMembers) -> K.TailMembers:
    def rs(r: K.RowSets) -> K.RowSets:
        return K.RowSets(ptr=_host(r.ptr), token=_host(r.token).astype(np.int64, copy=False), code=_host(r.code))

    return K.TailMembers(rs(mb.low_beyond), rs(mb.low_at), rs(mb.high_beyond), rs(mb.high_at))


def compact_members(parts: Sequence[K.TailMembers], bounds: K.TailBounds) -> K.TailMembers:
    """Fold several chunks' tail members into one equivalent part (host numpy arrays).

    Beyond-boundary sets are concatenated per row; at-boundary sets keep only the ``take`` lowest
    token ids per row, which is all :func:`~bsig_array.kernels.merge_tails` could ever keep, so
    merging the compacted part gives the same tails as merging all parts.  Token ids keep their
    dtype (the driver narrows them to int32 when the store's ids allow).
    """
    if len(parts) == 1:
        return parts[0]
    B = bounds.n_rows

    def fold(name: str, take: np.ndarray | None) -> K.RowSets:
        sets = [getattr(p, name) for p in parts]
        rows = np.concatenate([np.repeat(np.arange(B), np.diff(r.ptr)) for r in sets])
        tok = np.concatenate([r.token for r in sets])
        code = np.concatenate([r.code for r in sets])
        if take is None:
            order = np.argsort(rows, kind="stable")
            rows, tok, code = rows[order], tok[order], code[order]
        else:
            order = np.lexsort((tok, rows))
            rows, tok, code = rows[order], tok[order], code[order]
            rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
            keep = rank < take[rows]
            rows, tok, code = rows[keep], tok[keep], code[keep]
        ptr = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=B), out=ptr[1:])
        return K.RowSets(ptr=ptr, token=tok, code=code.astype(np.int32, copy=False))

    return K.TailMembers(
        low_beyond=fold("low_beyond", None),
        low_at=fold("low_at", bounds.low_take),
        high_beyond=fold("high_beyond", None),
        high_at=fold("high_at", bounds.high_take),
    )


# ----------------------------------------------------------------------------- stage


def chunk_sources(
    nll: xr.DataArray, chunk_tokens: int | None = None, *, store: str | os.PathLike | None = None,
) -> list[ChunkSource]:
    """One :class:`ChunkSource` per token chunk of ``nll`` (its dask chunks, else ``chunk_tokens``).

    With ``store`` (the path ``nll`` was opened from, unmodified), chunks are read with zarr directly.
    """
    from bsig_array.store import DEFAULT_CHUNK_TOKENS

    direct = _direct_store(nll, store)
    d = nll.sizes["token"]
    data = nll.data
    token = nll["token"].data if "token" in nll.coords else None
    if hasattr(data, "chunks") and hasattr(data, "dask"):
        widths = data.chunks[1]
    else:
        size = int(chunk_tokens or DEFAULT_CHUNK_TOKENS)
        widths = tuple(min(size, d - s) for s in range(0, d, size))
    sources = []
    start = 0
    for w in widths:
        stop = start + w
        tok = None if token is None else token[start:stop]
        if direct is not None:
            blk = ZarrSlice(direct, nll.name or "nll", start, stop)
        else:
            blk = data[:, start:stop]
            if hasattr(blk, "dask"):
                (blk,) = dask.optimize(blk)  # cull: ship only this chunk's graph
        if tok is not None and hasattr(tok, "dask"):
            (tok,) = dask.optimize(tok)
        sources.append(ChunkSource(blk, tok, start, stop))
        start = stop
    return sources


def screen(
    nll: xr.DataArray,
    score: xr.DataArray,
    *,
    methods: str | Sequence[str] = ("thrush", "preselect"),
    alpha: float = 0.01,
    ties: str = "average",
    memory_limit: str | int = "2GiB",
    scheduler: Any = "threads",
    device: str = "auto",
    null_permutations: int = 0,
    seed: int = 0,
    workers: int | None = None,
    backend: str = "auto",
    store: str | os.PathLike | None = None,
) -> xr.Dataset:
    """Screen every token against every benchmark with exact tail thresholds.

    Parameters
    ----------
    nll
        ``nll (model, token)`` from :func:`bsig_array.store.open_store` (dask-backed; the store's
        token chunks are the unit of work) or an in-memory DataArray.
    score
        ``score (model, benchmark)``; matched to ``nll``'s models by name.
    methods
        ``"thrush"``, ``"preselect"``, ``"both"`` or a sequence of them.
    alpha
        Fraction kept per tail, in (0, 0.5); ``k = max(floor(alpha·d), 1)`` tokens per tail.
    ties
        Ranking of tied NLLs for Thrush: ``"average"`` (midranks) or ``"first"`` (store order, the
        paper repo's behaviour).  Pre-select counts tied pairs as 0 either way.
    memory_limit
        Peak-memory promise (e.g. ``"2GiB"``), turned into block size and concurrency by
        :func:`bsig_array.memory.plan_screen`; a plan that cannot fit is refused before running.
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
        Path of the perplexity store ``nll`` was opened from: its chunks are then read with zarr
        directly (~3x faster than through xarray's decoding).  Ignored unless ``nll`` is that
        store's unmodified array.

    Returns
    -------
    xarray.Dataset
        The README's screen output; ``candidate_nll`` is a lazy gather from ``nll`` (write it with
        :func:`write_screen`).
    """
    methods = resolve_methods(methods)
    if ties not in ("average", "first"):
        raise BsigError(f"unknown ties rule {ties!r}; use average (midranks) or first (store order, as the paper repo)")
    check_scheduler(scheduler)
    device = resolve_device(device)
    if int(null_permutations) < 0:
        raise BsigError(f"null permutations must be >= 0, got {null_permutations}")
    null_permutations = int(null_permutations)
    if set(nll.dims) != {"model", "token"}:
        raise BsigError(f"nll has dims {nll.dims}, expected (model, token)")
    nll = nll.transpose("model", "token")
    models = [str(m) for m in nll["model"].values]
    d = int(nll.sizes["token"])
    k = _check_alpha(alpha, d)
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
        itemsize=nll.dtype.itemsize, methods=methods, k=k, memory_limit=memory_limit, max_workers=max_workers,
    )
    job = ScreenJob(
        methods=methods, Y=Y, Y_null=permuted_scores(Y, null_permutations, seed), ties=ties,
        block_tokens=plan.block_tokens, backend="cupy" if device == "gpu" else backend,
        models=tuple(models), path=str(store or "store"),
        threads=max(1, (os.cpu_count() or 1) // plan.workers) if isinstance(scheduler, str) else 0,
    )

    timings: dict[str, float] = {}
    spill = ColumnSpill()
    try:
        with task_runner(scheduler, plan.workers) as runner:
            t0 = time.perf_counter()
            hist, id_range = _run_pass1(runner, sources, job, d, timings)
            timings["pass1_s"] = time.perf_counter() - t0
            bounds = {meth: K.tail_bounds(hist[meth], k, meth, m) for meth in methods}
            job = dataclasses.replace(job, bounds=bounds)
            t0 = time.perf_counter()
            merged, null_counts = _run_pass2(runner, sources, job, d, timings, spill, id_range)
            timings["pass2_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        ds = _build_output(
            nll, score, sources, spill, methods=methods, hist=hist, bounds=bounds, merged=merged, k=k, m=m,
            id_range=id_range,
        )
        timings["merge_s"] = time.perf_counter() - t0
    except BaseException:
        spill.remove()
        raise
    if null_permutations:
        exceed = np.stack([
            null_exceedance(null_counts[meth], hist[meth], bounds[meth], meth, m, null_permutations)
            for meth in methods
        ])
        ds["null_exceedances"] = (("method", "benchmark"), exceed)
        ds["null_exceedances"].attrs["description"] = (
            "mean over label permutations of the tokens the screen's tail rule would keep from the null "
            "(strictly beyond the boundary, plus the boundary count times the observed take fraction)"
        )
        ds["null_fdr"] = (("method", "benchmark"), np.minimum(exceed / (2 * k), 1.0))
        ds["null_fdr"].attrs["description"] = "null_exceedances / (2k), capped at 1: estimated FDR of both tails"
    ds.attrs.update(
        alpha=float(alpha), ties=ties, n_tokens=d, k=k, methods=list(methods), null_permutations=null_permutations,
        seed=int(seed), device=device, scheduler=describe_scheduler(scheduler),
        memory_limit=int(parse_memory(memory_limit)), plan=plan.describe(), workers=plan.workers,
        timings={key: round(val, 4) for key, val in timings.items()},
        preselect_sign=(
            "eta counts correctly ordered pairs (Eq. 2 as printed): a perfect predictor has eta = 1, so the high "
            "tail holds tokens whose NLL order agrees with the benchmark"
        ),
    )
    return ds


def _run_pass1(
    runner: Any, sources: list[ChunkSource], job: ScreenJob, d: int, timings: dict,
) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
    """Summed histograms, and the range of the token ids when they are provably unique (increasing
    along the store), else ``None``."""
    hist: dict[str, np.ndarray] = {}
    spans = []
    with progress_bar("screen pass 1/2 (histograms)", total=d, unit="tokens") as bar:
        for res in runner.imap_unordered(histogram_task, [(s, job) for s in sources]):
            for meth, h in res["hist"].items():
                if meth in hist:
                    hist[meth] += h
                else:
                    hist[meth] = h.astype(np.int64, copy=True)
            spans.append(res["ids"])
            _add_times(timings, res["times"], "pass1")
            bar.advance(res["tokens"])
    spans.sort()
    unique = all(inc for *_, inc in spans) and all(a[2] < b[1] for a, b in zip(spans, spans[1:]))
    return hist, (spans[0][1], spans[-1][2]) if unique else None


def _run_pass2(
    runner: Any, sources: list[ChunkSource], job: ScreenJob, d: int, timings: dict, spill: "ColumnSpill",
    id_range: tuple[int, int] | None,
) -> tuple[dict[str, list[K.TailMembers]], dict[str, np.ndarray]]:
    """Tail members per method (parts for :func:`~bsig_array.kernels.merge_tails`) and null counts.

    Beyond-boundary members all end up in the tails, so their parts are kept as they arrive (no
    re-sorting); at-boundary members are folded every :data:`_COMPACT_EVERY` parts, which drops
    the ones that can no longer be kept.  Each chunk's member columns go straight to ``spill``.
    Held token ids are int32 when ``id_range`` (from pass 1) fits: the members are the largest
    thing the driver holds while the passes run.
    """
    info = np.iinfo(np.int32)
    narrow = id_range is not None and info.min <= id_range[0] and id_range[1] <= info.max
    beyond: dict[str, list[K.TailMembers]] = {meth: [] for meth in job.methods}
    at: dict[str, list[K.TailMembers]] = {meth: [] for meth in job.methods}
    null = {meth: np.zeros((job.Y_null.shape[0], 4), dtype=np.int64) for meth in job.methods}
    with progress_bar("screen pass 2/2 (tails)", total=d, unit="tokens") as bar:
        for res in runner.imap_unordered(tails_task, [(s, job) for s in sources]):
            t0 = time.perf_counter()
            spill.add(*res.pop("columns"))
            timings["pass2_spill_s"] = timings.get("pass2_spill_s", 0.0) + time.perf_counter() - t0
            for meth in job.methods:
                mb = _narrow(res["members"][meth]) if narrow else res["members"][meth]
                empty = _empty_rows(job.bounds[meth].n_rows)
                beyond[meth].append(K.TailMembers(mb.low_beyond, empty, mb.high_beyond, empty))
                at[meth].append(K.TailMembers(empty, mb.low_at, empty, mb.high_at))
                if len(at[meth]) >= _COMPACT_EVERY:
                    at[meth] = [compact_members(at[meth], job.bounds[meth])]
                null[meth] += res["null"][meth]
            _add_times(timings, res["times"], "pass2")
            bar.advance(res["tokens"])
    merged = {meth: beyond[meth] + [compact_members(at[meth], job.bounds[meth])] for meth in job.methods}
    return merged, null


def _narrow(mb: K.TailMembers) -> K.TailMembers:
    sets = (getattr(mb, name) for name in _SETS)
    return K.TailMembers(*(dataclasses.replace(r, token=r.token.astype(np.int32)) for r in sets))


def _empty_rows(n_rows: int) -> K.RowSets:
    return K.RowSets(ptr=np.zeros(n_rows + 1, dtype=np.int64), token=np.empty(0, np.int64), code=np.empty(0, np.int32))


def _add_times(total: dict[str, float], times: dict[str, float], prefix: str) -> None:
    for key, val in times.items():
        total[f"{prefix}_{key}_s"] = total.get(f"{prefix}_{key}_s", 0.0) + val


def null_exceedance(
    counts: np.ndarray, hist: np.ndarray, bounds: K.TailBounds, method: str, m: int, n_perm: int,
) -> np.ndarray:
    """Mean per benchmark of the tokens the tail rule keeps from the label-permuted null.

    ``counts`` (N·B, 4) holds per null row the tokens strictly below / at the low boundary and
    strictly above / at the high boundary.  The rule keeps everything strictly beyond and, at a
    boundary, the fraction ``take / count_at_boundary`` it kept from the observed scores.
    """
    offset, _ = K.lattice(method, m)
    B = hist.shape[0]
    rows = np.arange(B)
    f_low = bounds.low_take / hist[rows, bounds.low_code + offset]
    f_high = bounds.high_take / hist[rows, bounds.high_code + offset]
    c = counts.reshape(n_perm, B, 4).astype(np.float64)
    kept = c[..., 0] + c[..., 1] * f_low + c[..., 2] + c[..., 3] * f_high
    return kept.mean(axis=0)


def _strings(values: Any) -> np.ndarray:
    # object dtype: Zarr v3 stores it as variable-length strings (fixed-width unicode has no v3 spec)
    return np.array([str(v) for v in values], dtype=object)


def _build_output(
    nll: xr.DataArray, score: xr.DataArray, sources: list[ChunkSource], spill: "ColumnSpill", *,
    methods: tuple[str, ...], hist: dict[str, np.ndarray], bounds: dict[str, K.TailBounds],
    merged: dict[str, list[K.TailMembers]], k: int, m: int, id_range: tuple[int, int] | None,
) -> xr.Dataset:
    B = score.sizes["benchmark"]
    # Filled one method at a time, dropping each method's members once merged: the candidate
    # arrays are the largest thing the driver holds (see memory.screen_driver_bytes).
    token = np.empty((len(methods), B, 2, k), dtype=np.int64)
    cand_score = np.empty((len(methods), B, 2, k), dtype=np.float64)
    threshold = np.empty((len(methods), B, 2), dtype=np.float64)
    for i, meth in enumerate(methods):
        sel = K.merge_tails(merged.pop(meth), bounds[meth])
        scale = K.code_scale(meth, m)
        token[i] = sel.token
        np.divide(sel.code, scale, out=cand_score[i])
        threshold[i, :, 0] = bounds[meth].low_code / scale
        threshold[i, :, 1] = bounds[meth].high_code / scale
        del sel
    bench_coords = {
        name: ("benchmark", _strings(c.values) if c.dtype.kind in "OUS" else c.values)
        for name, c in score.coords.items() if c.dims == ("benchmark",)
    }
    ds = xr.Dataset(
        {
            "candidate_token": (("method", "benchmark", "tail", "rank"), token),
            "candidate_score": (("method", "benchmark", "tail", "rank"), cand_score),
            "threshold": (("method", "benchmark", "tail"), threshold),
        },
        coords={"method": _strings(methods), "tail": _strings(TAILS), "model": _strings(nll["model"].values), **bench_coords},
    )
    ds["candidate_token"].attrs["description"] = "token ids kept in each tail, sorted by id (exactly k per tail)"
    ds["candidate_score"].attrs["description"] = "gamma (thrush) or eta (preselect) of each candidate"
    ds["threshold"].attrs["description"] = "score at each tail's boundary (ties there broken by lowest token id)"
    for meth in methods:
        offset, n_bins = K.lattice(meth, m)
        codes = np.arange(n_bins) - offset
        ds[f"histogram_{meth}"] = (("benchmark", f"{meth}_bin"), hist[meth])
        ds = ds.assign_coords({f"{meth}_bin": codes / 2.0 if meth == "thrush" else codes})
        ds[f"histogram_{meth}"].attrs["description"] = (
            "exact counts of gamma over its half-integer lattice" if meth == "thrush" else "exact counts of eta*Z over 0..Z"
        )

    union = _union(token, id_range)
    if id_range is None:
        check_unique(sources, union)
    ds["candidate_nll"] = (("model", "candidate"), spill.gather(union, m))
    ds = ds.assign_coords(candidate=union)
    ds["candidate_nll"].attrs["description"] = "NLL columns of the union of candidates (coord candidate = token id)"
    return ds


def _union(token: np.ndarray, id_range: tuple[int, int] | None) -> np.ndarray:
    """Sorted distinct ids of ``token``; a mask over ``id_range`` when that is no bigger than sorting."""
    if id_range is not None:
        lo, hi = id_range
        if hi - lo + 1 <= 8 * token.size:  # the mask (1 B per id) costs at most the sort's copy (8 B per entry)
            mask = np.zeros(hi - lo + 1, dtype=bool)
            for row in token.reshape(-1, token.shape[-1]):  # row by row: no full-size temporary
                mask[row - lo] = True
            return np.flatnonzero(mask) + lo
    return _sorted_unique(token)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (numpy 2's hash-based ``np.unique`` is ~10x slower on 1e7 int64 here)."""
    s = np.sort(x, axis=None)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size else s


class ColumnSpill:
    """Temporary directory of the NLL columns that pass 2 hands back, one ``.npy`` per store chunk.

    The driver writes each chunk's member columns and their token ids as they arrive and keeps
    only the chunk starts, so its memory does not grow with the members.  The directory (under
    ``TMPDIR``) is removed when this object is garbage collected: the lazy ``candidate_nll``
    gather references it, so the files live exactly as long as a screen result that can still be
    written.  Copies that cross a process boundary are plain paths and never delete anything.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="bsig-screen-spill-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._starts: list[int] = []

    def __fspath__(self) -> str:
        return self.path

    def __reduce__(self) -> tuple:
        return (str, (self.path,))

    def remove(self) -> None:
        """Delete the directory now."""
        self._remove()

    def add(self, start: int, ids: np.ndarray, columns: np.ndarray) -> None:
        """Store the columns (m, n) of the sorted token ids ``ids`` of the chunk starting at ``start``."""
        np.save(os.path.join(self.path, f"{start}.npy"), columns, allow_pickle=False)
        np.save(os.path.join(self.path, f"{start}.ids.npy"), ids, allow_pickle=False)
        self._starts.append(start)

    def gather(self, union: np.ndarray, m: int) -> Any:
        """Lazy (dask) float32 array (m, len(union)) of the columns of ``union`` (sorted, unique ids).

        One task per output chunk of :data:`CANDIDATE_CHUNK` candidates reads just their columns
        from the memory-mapped spill files, so no chunk-sized piece is held or rechunked.
        """
        import dask.array as da

        n = union.size
        starts = tuple(sorted(self._starts))
        piece = np.empty(n, dtype=np.int32)  # spill file of each candidate
        row = np.empty(n, dtype=np.int32)  # its column in that file (< chunk width)
        for i, start in enumerate(starts):
            ids = np.load(os.path.join(self.path, f"{start}.ids.npy"))
            idx = np.minimum(np.searchsorted(union, ids), max(n - 1, 0))
            hit = np.flatnonzero(union[idx] == ids) if n else np.empty(0, np.int64)
            piece[idx[hit]] = i
            row[idx[hit]] = hit
        blocks = []
        for a in range(0, n, CANDIDATE_CHUNK):
            b = min(a + CANDIDATE_CHUNK, n)
            read = dask.delayed(_read_columns)(self, starts, piece[a:b].copy(), row[a:b].copy(), m)
            blocks.append(da.from_delayed(read, shape=(m, b - a), dtype=np.float32))
        if not blocks:
            return da.zeros((m, 0), dtype=np.float32, chunks=(m, CANDIDATE_CHUNK))
        return da.concatenate(blocks, axis=1)


def _read_columns(
    spill: ColumnSpill | str, starts: tuple[int, ...], piece: np.ndarray, row: np.ndarray, m: int,
) -> np.ndarray:
    out = np.empty((m, piece.size), dtype=np.float32)
    for p in np.unique(piece):
        at = np.flatnonzero(piece == p)
        # memory-mapped: only the pages of the wanted columns are read (and resident only meanwhile)
        cols = np.load(os.path.join(os.fspath(spill), f"{starts[p]}.npy"), mmap_mode="r")
        out[:, at] = cols[:, row[at]]
        del cols
    return out


def check_unique(sources: Sequence[ChunkSource], union: np.ndarray) -> None:
    """Refuse a store in which a candidate's token id occurs more than once (one scan of the ids).

    Raises
    ------
    BsigError
        When a candidate id occurs more than once in the store (token ids must be unique).
    """
    ids = np.concatenate([locate_task(src, union) for src in sources])
    if ids.size != union.size:
        counts = np.bincount(np.searchsorted(union, ids), minlength=union.size)
        raise BsigError(
            f"token id {int(union[np.argmax(counts > 1)])} occurs {int(counts.max())} times in the store; screening "
            "needs unique token ids (write the token coordinate when creating the store)"
        )


# ----------------------------------------------------------------------------- output


def write_screen(
    ds: xr.Dataset, out: str | os.PathLike, *, overwrite: bool = False, scheduler: Any = "threads",
    workers: int | None = None,
) -> Path:
    """Write a screen result to ``out`` (Zarr v3), atomically: temp directory, then rename.

    The lazy ``candidate_nll`` gather runs here, in this process (it reads the driver's column
    spill, which remote workers cannot see) on threads with the plan's concurrency, or in the
    calling thread when ``scheduler`` is ``"synchronous"``; any other ``scheduler`` value (a
    distributed address or client) is accepted for symmetry with :func:`screen`.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BsigError(f"output {out} already exists; pass --overwrite to replace it or pick another path")
    n_workers = workers or ds.attrs.get("workers")
    encoding = {"candidate_nll": {"chunks": (ds.sizes["model"], min(CANDIDATE_CHUNK, max(ds.sizes["candidate"], 1)))}}
    with atomic_output(out) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            delayed = ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, encoding=encoding, compute=False)
        _compute_with_progress(delayed, scheduler, n_workers)
    return out


def _compute_with_progress(delayed: Any, scheduler: Any, workers: int | None) -> None:
    from dask.callbacks import Callback

    n_tasks = len(delayed.__dask_graph__())
    with progress_bar("screen gather candidate_nll", total=n_tasks, unit="tasks") as bar:

        class _Advance(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.advance(1)

        # The gather reads the spill and the write compresses, which release the GIL: threads, never processes.
        kwargs: dict[str, Any] = {"scheduler": "synchronous" if scheduler == "synchronous" else "threads"}
        if workers and scheduler != "synchronous":
            kwargs["num_workers"] = workers
        with _Advance():
            dask.compute(delayed, **kwargs)
