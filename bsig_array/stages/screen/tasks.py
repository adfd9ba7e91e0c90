"""Screen tasks: what runs on one store chunk, on any scheduler (pure functions of their arguments).

:func:`histogram_task` (pass 1) reads a chunk through the store's read path, checks its values and
counts every benchmark's integer codes on each coefficient's exact lattice; :func:`tails_task`
(pass 2) collects the chunk's tail members against the final boundaries, counts the label-permuted
null rows and hands back the NLL columns of its members.  Everything a task needs besides its chunk
travels in one small :class:`ScreenJob`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsig_array import kernels as K
from bsig_array.io.perplexity_store.chunks import ChunkSource
from bsig_array.io.perplexity_store.schema import check_block
from bsig_array.kernels.unique import sorted_unique
from bsig_array.stages.screen.merge import MEMBER_SETS, compact_members


@dataclass(frozen=True)
class ScreenJob:
    """What every task needs besides its chunk (shipped with each task; small)."""

    coefficients: tuple[str, ...]
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

        # thread-local setting (numba.config defines NUMBA_NUM_THREADS at runtime, unseen by mypy)
        numba.set_num_threads(min(job.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    return np


def _codes(P: Any, Y: Any, job: ScreenJob) -> dict[str, Any]:
    """Codes (rows, n) of each method; both at once share the pairwise comparisons."""
    if len(job.coefficients) == 2:
        return K.screen_codes(P, Y, job.ties, backend=job.backend)
    if job.coefficients == ("thrush",):
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
    hist = {meth: None for meth in job.coefficients}
    for s, e in _blocks(block, job.block_tokens):
        P = xp.asarray(np.ascontiguousarray(block[:, s:e]))
        t0 = time.perf_counter()
        codes = _codes(P, Y, job)
        t1 = time.perf_counter()
        for meth in job.coefficients:
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
    parts: dict[str, list[K.TailMembers]] = {meth: [] for meth in job.coefficients}
    null = {meth: np.zeros((n_null, 4), dtype=np.int64) for meth in job.coefficients}
    n_perm = n_null // B if B else 0
    # each permuted copy is judged against its own benchmark's observed boundaries
    edges = {
        meth: (xp.asarray(np.tile(job.bounds[meth].low_code, n_perm)), xp.asarray(np.tile(job.bounds[meth].high_code, n_perm)))
        for meth in job.coefficients
    }
    for s, e in _blocks(block, job.block_tokens):
        P = xp.asarray(np.ascontiguousarray(block[:, s:e]))
        sub_ids = xp.asarray(ids[s:e])
        t0 = time.perf_counter()
        codes = _codes(P, Y, job)
        t1 = time.perf_counter()
        for meth in job.coefficients:
            found = K.tail_members(codes[meth][:B], sub_ids, job.bounds[meth], backend=job.backend)
            parts[meth].append(_members_to_host(found))
            if n_null:
                low, high = edges[meth]
                null[meth] += _host(K.tail_counts(codes[meth][B:], low, high, backend=job.backend)).astype(np.int64)
        times["codes"] += t1 - t0
        times["count"] += time.perf_counter() - t1
    members = {meth: compact_members(p, job.bounds[meth]) for meth, p in parts.items()}
    t0 = time.perf_counter()
    sel, pos = _member_columns([getattr(mb, name).token for mb in members.values() for name in MEMBER_SETS], ids)
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
    sel = sorted_unique(np.concatenate(tokens))
    if w < 2 or np.all(ids[1:] > ids[:-1]):
        return sel, np.searchsorted(ids, sel)
    order = np.argsort(ids, kind="stable")
    return sel, order[np.searchsorted(ids, sel, sorter=order)]


def _members_to_host(mb: K.TailMembers) -> K.TailMembers:
    def rs(r: K.RowSets) -> K.RowSets:
        return K.RowSets(ptr=_host(r.ptr), token=_host(r.token).astype(np.int64, copy=False), code=_host(r.code))

    return K.TailMembers(rs(mb.low_beyond), rs(mb.low_at), rs(mb.high_beyond), rs(mb.high_at))
