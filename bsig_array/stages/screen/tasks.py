"""Screen tasks: what runs on one store chunk (or one segment of chunks), on any scheduler.

Pure functions of their arguments plus the spill directory they write to:

* :func:`scan_task` reads a chunk through the store's read path, checks its values, forms every
  benchmark's integer codes (Thrush ``2γ``, Pre-select ``η·Z``) block by block, counts them on each
  coefficient's exact lattice (adding the counts to the pass's sums in this process, :mod:`.accumulate`,
  or returning them from another) and, against the tail boundaries it is given, collects the chunk's tail
  members and writes them with their NLL columns to the spill (:mod:`.spill`).  In the one-pass
  screen the boundaries are the running ones of the chunks read so far; in the two-pass fallback
  pass 1 only counts and pass 2 collects against the final boundaries and counts the
  label-permuted null rows.
* :func:`count_task` and :func:`finalize_task` turn a segment's spilled members into the exact
  final tails once the full histograms fix the boundaries (:mod:`.merge` allocates the ties).

Everything a task needs besides its chunk travels in one small :class:`ScreenJob`; a scan returns a
:class:`ScanResult`.  Both are frozen dataclasses of plain values and arrays (no locks, no closures),
so they pickle for a process pool and dask.distributed; only the in-process histogram sums, a live
object, are handed to a scan beside its job, and only on an in-process scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsig_array import kernels as K
from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.chunks import ChunkSource
from bsig_array.io.perplexity_store.schema import check_block
from bsig_array.stages.screen import spill as S
from bsig_array.stages.screen.accumulate import PassHistograms
from bsig_array.stages.screen.merge import (
    Members,
    covers,
    members_of,
    open_bounds,
    running_bounds,
    speculative_bounds,
    tighter,
)

#: Sub-blocks after which a one-pass task refreshes its own boundaries (1, 4, 16, 64, 256 blocks read).
_REFRESH = frozenset((0, 3, 15, 63, 255))


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
    k: int
    spill: str = ""  # spill directory the collecting tasks write to
    block_members: int = 1 << 22  # members a finalize task handles at once (a key block)
    threads: int = 0  # numba threads per task (0: numba's default); avoids oversubscribing the cores
    count: bool = True  # histogram the observed rows (one pass; pass 1 of two)
    collect: bool = True  # collect and spill tail members (one pass; pass 2 of two)
    bounds: dict[str, K.TailBounds] = field(default_factory=dict)  # running (one pass) or final (pass 2)
    speculative: dict[str, K.TailBounds] = field(default_factory=dict)  # one pass: checked after the pass
    n_tokens: int = 0  # tokens in the store (sizes the chunk's own speculative boundaries)


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan_task` returns for one chunk (small: counts, never members or columns)."""

    tokens: int  # tokens in the chunk
    span: tuple[int, int, int, bool]  # chunk start, lowest and highest token id, whether the ids increase
    nll_range: tuple[np.ndarray, np.ndarray]  # each model's minimum and maximum NLL in the chunk
    times: dict[str, float]  # seconds per task phase: read, check, codes, count, collect, spill
    # host histograms (B, bins) of the observed rows per coefficient; empty when the pass only collects
    # or the task added them to the pass's in-process sums
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    # per coefficient (N·B, 4) counts of the null rows beyond / at the observed boundaries; empty without them
    null: dict[str, np.ndarray] = field(default_factory=dict)
    spilled: int = 0  # bytes written to the spill (members and NLL columns)


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


def _fused_codes(P: Any, Y: Any, job: ScreenJob, hist: dict[str, Any], n_hist: int, xp: Any) -> tuple[dict[str, Any], bool]:
    """Codes, and whether a backend with a fused kernel (``screen_chunk``: the GPU path) already
    added rows ``< n_hist`` into ``hist`` (kept on its device) in the same launch."""
    impl = K.get_backend(job.backend, P)
    if not n_hist or not hasattr(impl, "screen_chunk"):
        return _codes(P, Y, job), False
    m, y = P.shape[0], K.to_host(Y)
    for meth in job.coefficients:
        if hist[meth] is None:
            hist[meth] = xp.zeros((n_hist, K.lattice(meth, m)[1]), dtype=xp.int64)
    out = impl.screen_chunk(
        P, K.thrush_weights(y) if "thrush" in hist else None, K.preselect_positions(y) if "preselect" in hist else None,
        job.ties, hist=(hist.get("thrush"), hist.get("preselect")), n_hist=n_hist,
        offsets=(K.lattice("thrush", m)[0], K.lattice("preselect", m)[0]),
    )
    return {meth: out[meth] for meth in job.coefficients}, True


def _device(x: np.ndarray, job: ScreenJob, xp: Any) -> Any:
    """A sub-block on the job's device; on the GPU through pinned buffers (asynchronous copy)."""
    return K.get_backend("cupy").to_device(x) if job.backend == "cupy" else xp.asarray(x)


def _blocks(width: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, width, size):
        yield s, min(s + size, width)


def _load_checked(
    source: ChunkSource, job: ScreenJob
) -> tuple[np.ndarray, np.ndarray, bool, dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Read one chunk, reject NaN/inf, negative NLLs and repeated token ids in it; the block, its ids,
    whether they increase, the timings and each model's minimum and maximum NLL in it."""
    times = dict.fromkeys(("read", "check", "codes", "count", "collect", "spill"), 0.0)
    t0 = time.perf_counter()
    block, ids = source.load()
    times["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extremes = check_block(block, job.models, source.start, path=job.path)
    increasing = bool(np.all(ids[1:] > ids[:-1]))
    if not increasing:
        _check_unique(ids)
    times["check"] = time.perf_counter() - t0
    return block, ids, increasing, times, extremes


def _check_unique(ids: np.ndarray) -> None:
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        tok = s[dup[0]]
        raise InputError(
            f"token id {int(tok)} occurs {int(np.count_nonzero(s == tok))} times in the store; screening needs unique token ids "
            "(write the token coordinate when creating the store)"
        )


def scan_task(source: ChunkSource, job: ScreenJob, sums: PassHistograms | None = None) -> ScanResult:
    """One chunk: histograms of the observed rows (``job.count``), tail members spilled (``job.collect``).

    Members of a sub-block are the tokens strictly beyond each boundary (or at it, the boundary's
    ``take`` lowest ids): the boundaries of ``job.bounds`` (the running ones of the other chunks
    read so far, or the final ones in pass 2) tightened, in one pass, by this chunk's own running
    boundaries (a token behind the ``k``-th of any set of tokens containing it can never be among
    the final ``k``) and by speculative ones (:func:`~.merge.speculative_bounds`), whose tightest
    per tail is recorded with the chunk's spill for the check after the pass.  Members are appended
    to the spill part by part, then the NLL columns of their union; the task returns only counts
    and, unless it adds them to the pass's in-process ``sums`` (:mod:`.accumulate`; given only when
    it runs in the driver's process), the histograms.
    """
    xp = _xp(job)
    block, ids, increasing, times, extremes = _load_checked(source, job)
    m, w = block.shape
    B = job.Y.shape[0]
    n_null = job.Y_null.shape[0] if job.collect else 0
    Y = xp.asarray(np.concatenate([job.Y, job.Y_null]) if n_null else job.Y)
    hist: dict[str, Any] = dict.fromkeys(job.coefficients)
    null = {meth: np.zeros((n_null, 4), dtype=np.int64) for meth in job.coefficients}
    edges = _null_edges(job, xp) if n_null else {}
    writer = S.MemberWriter(job.spill, source.start, job.coefficients, 2 * B) if job.collect else None
    mask = np.zeros(w if job.collect else 0, dtype=bool)  # local ids of any member
    used: dict[str, K.TailBounds] = {}  # the tightest boundaries each coefficient was collected with
    own: dict[str, K.TailBounds] = {}  # from this chunk's own histogram, refreshed after 1, 4, 16, ... sub-blocks
    # local id = rank of the token id within the chunk: the tie-break order, and an index
    order = None if increasing else np.argsort(ids, kind="stable")
    local = np.arange(w, dtype=np.int64)
    if order is not None:
        local[order] = np.arange(w, dtype=np.int64)
    try:
        for i, (s, e) in enumerate(_blocks(w, job.block_tokens)):
            P = _device(np.ascontiguousarray(block[:, s:e]), job, xp)
            t0 = time.perf_counter()
            codes, counted = _fused_codes(P, Y, job, hist, B if job.count else 0, xp)
            times["codes"] += time.perf_counter() - t0
            for meth in job.coefficients:
                t0 = time.perf_counter()
                if job.count and not counted:
                    hist[meth] = K.histogram_codes(codes[meth][:B], meth, m, out=hist[meth], backend=job.backend)
                if n_null:
                    low, high = edges[meth]
                    null[meth] += K.to_host(K.tail_counts(codes[meth][B:], low, high, backend=job.backend)).astype(np.int64)
                t1 = time.perf_counter()
                times["count"] += t1 - t0
                if writer is not None:
                    if job.count and i in _REFRESH:  # tightening pays off early; each refresh scans the lattice
                        own[meth] = _own_bounds(job, meth, hist[meth], m, B)
                    bounds = tighter(own[meth], _given(job, meth, m, B)) if meth in own else _given(job, meth, m, B)
                    used[meth] = tighter(used[meth], bounds) if meth in used else bounds
                    found = members_of(
                        K.tail_members(codes[meth][:B], xp.asarray(local[s:e]), bounds, backend=job.backend), K.to_host,
                    )
                    t2 = time.perf_counter()
                    writer.add(meth, found)
                    mask[found.token] = True
                    times["spill"] += time.perf_counter() - t2
                times["collect"] += time.perf_counter() - t1
        spilled = 0
        if writer is not None:
            writer.close()
            if job.count:  # one pass: the boundaries used are checked against the final ones afterwards
                S.write_used(job.spill, source.start, used)
            t0 = time.perf_counter()
            sel = np.flatnonzero(mask).astype(np.int32)
            pos = sel if order is None else order[sel]
            spilled = writer.nbytes + S.write_columns(
                job.spill, source.start, sel, ids[pos], np.take(block, pos, axis=1),
            )
            times["spill"] += time.perf_counter() - t0
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    returned: dict[str, np.ndarray] = {}
    if job.count and sums is not None:  # in this process: added where they were formed (the device, on a GPU)
        sums.add(hist)
    elif job.count:
        returned = {meth: K.to_host(h) for meth, h in hist.items()}
    return ScanResult(
        tokens=w, span=(source.start, int(ids.min()), int(ids.max()), increasing), nll_range=extremes, times=times,
        hist=returned, null=null if n_null else {}, spilled=spilled,
    )


def _given(job: ScreenJob, meth: str, m: int, B: int) -> K.TailBounds:
    """The boundaries sent with the task: running (or final) tightened by the speculative ones."""
    found = [b for b in (job.bounds.get(meth), job.speculative.get(meth)) if b is not None]
    if not found:
        return open_bounds(meth, m, B)
    return found[0] if len(found) == 1 else tighter(found[0], found[1])


def _own_bounds(job: ScreenJob, meth: str, hist: Any, m: int, B: int) -> K.TailBounds:
    """One pass: the running and speculative boundaries of the chunk's own histogram so far (reduced
    on its device; only the boundaries come back)."""
    found = [b for b in (running_bounds(hist, job.k, meth, m), speculative_bounds(hist, job.k, job.n_tokens, meth, m))
             if b is not None]
    if not found:
        return open_bounds(meth, m, B)
    return found[0] if len(found) == 1 else tighter(found[0], found[1])


def verify_task(spill: str, start: int, final: dict[str, K.TailBounds]) -> int | None:
    """``start`` if the chunk's members were collected with boundaries that may miss final members
    (it must be read again), else ``None``."""
    used = S.read_used(spill, start)
    return None if all(covers(used[c], final[c]) for c in final) else start


def _null_edges(job: ScreenJob, xp: Any) -> dict[str, tuple[Any, Any]]:
    """Each permuted copy is judged against its own benchmark's observed (final) boundaries."""
    n_perm = job.Y_null.shape[0] // max(job.Y.shape[0], 1)
    return {
        meth: (xp.asarray(np.tile(b.low_code, n_perm)), xp.asarray(np.tile(b.high_code, n_perm)))
        for meth, b in job.bounds.items()
    }


def _segment_ptrs(spill: str, starts: Sequence[int], coef: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Each chunk's member offsets and the segment's member count per key."""
    ptrs = [S.member_ptr(spill, start, coef) for start in starts]
    counts = sum(np.diff(p, axis=1).sum(axis=0) for p in ptrs)
    return ptrs, np.asarray(counts, dtype=np.int64)


def _block_members(
    spill: str, starts: Sequence[int], ptrs: Sequence[np.ndarray], coef: str, q0: int, q1: int,
    to_segment: Sequence[np.ndarray] | None = None,
) -> Members:
    """Members of keys ``q0 <= key < q1`` of a segment's chunks (local ids mapped to the segment's)."""
    parts = [S.read_members(spill, start, coef, q0, q1, ptr) for start, ptr in zip(starts, ptrs)]
    if to_segment is not None:
        parts = [Members(p.key, to_segment[i][p.token], p.code) for i, p in enumerate(parts)]
    if len(parts) == 1:
        return parts[0]
    return Members(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("key", "token", "code")))


def _classify(mb: Members, b: K.TailBounds) -> tuple[np.ndarray, np.ndarray]:
    """Masks of members strictly beyond, and at, their tail's final boundary."""
    row, high = mb.key // 2, (mb.key % 2).astype(bool)
    edge = np.where(high, b.high_code[row], b.low_code[row])
    beyond = np.where(high, mb.code > edge, mb.code < edge)
    return beyond, mb.code == edge


def count_task(spill: str, starts: Sequence[int], bounds: dict[str, K.TailBounds], budget: int) -> dict[str, np.ndarray]:
    """Per coefficient, a segment's members strictly beyond / at each final boundary: (2, 2B) int64."""
    out = {}
    for coef, b in bounds.items():
        ptrs, counts = _segment_ptrs(spill, starts, coef)
        total = np.zeros((2, counts.size), dtype=np.int64)
        for q0, q1 in S.key_blocks(counts, budget):
            mb = _block_members(spill, starts, ptrs, coef, q0, q1)
            beyond, at = _classify(mb, b)
            total[0] += np.bincount(mb.key[beyond], minlength=counts.size)
            total[1] += np.bincount(mb.key[at], minlength=counts.size)
        out[coef] = total
    return out


def _segment_index(
    spill: str, starts: Sequence[int], widths: Sequence[int], sources: Sequence[ChunkSource] | None,
) -> tuple[int, list[np.ndarray] | None, dict[str, np.ndarray]]:
    """A segment's width, each chunk's local → segment-local id map (``None`` for one chunk), and
    its spilled columns by segment-local id: ``where`` (index into ``src``/``pos``/``ids``, -1 if none).

    A segment of several chunks (their id ranges overlap) ranks all their ids together, after
    checking them unique; memory is then proportional to the segment.
    """
    spilled = [S.read_local(spill, start) for start in starts]
    to_segment = None
    if sources is not None:
        all_ids = [src.load_ids() for src in sources]
        _check_unique(np.concatenate(all_ids))
        ranked = np.concatenate([np.sort(i) for i in all_ids])
        rank = np.empty(ranked.size, dtype=np.int64)
        rank[np.argsort(ranked, kind="stable")] = np.arange(ranked.size)
        bounds = np.cumsum([0, *[i.size for i in all_ids]])
        to_segment = [rank[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    width = int(sum(widths))
    local = [loc if to_segment is None else to_segment[i][loc] for i, (loc, _) in enumerate(spilled)]
    where = np.full(width, -1, dtype=np.int64)
    where[np.concatenate(local)] = np.arange(sum(loc.size for loc in local))
    index = {
        "where": where,
        "src": np.concatenate([np.full(loc.size, i, dtype=np.int32) for i, loc in enumerate(local)]),
        "pos": np.concatenate([np.arange(loc.size, dtype=np.int64) for loc in local]),
        "ids": np.concatenate([ids for _, ids in spilled]),
    }
    return width, to_segment, index


def finalize_task(
    spill: str, segment: int, starts: Sequence[int], widths: Sequence[int], sources: Sequence[ChunkSource] | None,
    bounds: dict[str, K.TailBounds], at_take: dict[str, np.ndarray], budget: int,
) -> int:
    """Keep a segment's final tail members (spilled as ``seg<segment>``) and their union; returns its size.

    ``at_take[coef]`` (2B,) is how many of the segment's at-boundary members each tail keeps: its
    lowest ids (:func:`~bsig_array.stages.screen.merge.allocate_ties`).  Only the members at a
    boundary and the kept ones are sorted (by key, then id); the rest is classified and dropped.
    ``sources`` are given for segments of several chunks, whose ids are then ranked together.
    """
    width, to_segment, index = _segment_index(spill, starts, widths, sources)
    union_mask = np.zeros(width, dtype=bool)
    n_keys = 2 * next(iter(bounds.values())).n_rows
    writer = S.MemberWriter(spill, f"seg{segment}", tuple(bounds), n_keys, kept=True)
    try:
        for coef, b in bounds.items():
            ptrs, counts = _segment_ptrs(spill, starts, coef)
            for q0, q1 in S.key_blocks(counts, budget):
                mb = _block_members(spill, starts, ptrs, coef, q0, q1, to_segment)
                beyond, at = _classify(mb, b)
                at_idx = np.flatnonzero(at)
                at_idx = at_idx[np.argsort(mb.key[at_idx].astype(np.int64) * width + mb.token[at_idx])]
                key_at = mb.key[at_idx]
                rank = np.arange(at_idx.size) - np.searchsorted(key_at, key_at, side="left")
                keep = beyond
                keep[at_idx[rank < at_take[coef][key_at]]] = True
                kept = np.flatnonzero(keep)
                kept = kept[np.argsort(mb.key[kept].astype(np.int64) * width + mb.token[kept])]
                writer.add(coef, Members(mb.key[kept], mb.token[kept], mb.code[kept]))
                union_mask[mb.token[kept]] = True
        writer.close()
    except BaseException:
        writer.abort()
        raise
    members = np.flatnonzero(union_mask)
    at = index["where"][members]
    if at.size and at.min() < 0:
        raise ValueError(f"segment {segment}: a kept member has no spilled NLL column")
    upos = np.cumsum(union_mask, dtype=np.int64) - 1
    S.write_union(spill, segment, union=index["ids"][at], src=index["src"][at], pos=index["pos"][at], upos=upos)
    S.drop(spill, starts, [f"{c}.{kind}" for c in bounds for kind in ("tok", "code", "ptr.npy")])
    return int(members.size)
