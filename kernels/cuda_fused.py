# numba.cuda's intrinsics (cuda.grid, cuda.atomic.add, cuda.popc) are typing stubs to mypy:
# mypy: disable-error-code="call-arg,var-annotated,operator"
"""Fused GPU screening kernels (numba.cuda): one thread per token, every benchmark, both coefficients.

One launch of :func:`screen_chunk` computes, for each token of a chunk ``P`` (m, n):

* the doubled ranks ``2R`` of its m NLLs (both tie rules, the definitions of
  :func:`~bsig_array.kernels.backend_portable.doubled_ranks`), in registers/local memory, from the
  values read once as ordered integers of their own width (:func:`_keys`): a float16 store stays two
  bytes a value on the device, and integer compares are exact (-0.0 == +0.0);
* every row's Thrush code ``2γ = Σ_a C[r, a]·2R_a`` in int32 (exact: small integers);
* every row's Pre-select code ``Σ_a popcount(GT[a] & AFTER[r, a])`` (``GT[a]`` = models with a
  lower NLL than ``a``, one 32-bit word of models at a time), the inversion count of the CPU path;
* optionally the histogram of the first ``n_hist`` rows, added with atomics into int64 accumulators
  that stay on the device across calls (pass the same arrays for every chunk), and the per-row
  counts beyond / at running tail boundaries (the tail test of
  :func:`~bsig_array.kernels.tails.tail_counts`).

The same kernel source runs on a GPU (arrays with ``__cuda_array_interface__``, e.g. CuPy, launched
on CuPy's current stream) and under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, numpy
arrays), which is how CI checks it bit for bit against the CPU kernels: no GPU was available to this
project, so only the simulator has run it.  Pure: no I/O.  Integer results are exact on any device;
atomics only add integers, so the order of the adds cannot change a histogram.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from array_api_compat import array_namespace
from numba import cuda

from bsig_array.kernels import backend_portable as _portable
from bsig_array.kernels._checks import MAX_MODELS, check_ties
from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.tails import to_host
from bsig_array.kernels.types import TailBounds, TailMembers

name = "cuda"  # a complete kernel backend on the arrays it is given (CuPy on a GPU, numpy in the simulator)
THREADS = 128  # threads per block (tokens per block)
_WORDS = (MAX_MODELS + 31) // 32  # 32-bit words of model bitmasks


# ----------------------------------------------------------------------------- device functions


@cuda.jit(device=True, inline=True)
def _load_keys(P, t, m, mask, v):
    """Token ``t``'s m values as ordered integers in ``v``: ``P`` holds the bits of IEEE floats
    (:func:`_keys`), non-negative patterns keep their order and negative ones are mirrored, so
    integer order is float order and -0.0 == +0.0 (a sign-magnitude to two's-complement map)."""
    for a in range(m):
        x = numba.int64(P[a, t])
        v[a] = x if x >= 0 else -(x & mask)


@cuda.jit(device=True, inline=True)
def _rank2(v, a, m, first):
    """``2·rank`` of model ``a`` among the keys ``v`` (average: midranks; first: store order)."""
    pa = v[a]
    acc = 2 if first else 1
    for b in range(m):
        pb = v[b]
        lt = 1 if pb < pa else 0
        le = 1 if pb <= pa else 0
        if first:
            acc += 2 * (le if b < a else lt)
        else:
            acc += lt + le
    return acc


@cuda.jit(device=True, inline=True)
def _account(code, r, hist, off, n_hist, low, high, counts, bad):
    """Histogram (rows < ``n_hist``) and tail test (rows with a boundary) of one code."""
    if r < n_hist:
        j = code + off
        if 0 <= j < hist.shape[1]:
            cuda.atomic.add(hist, (r, j), 1)
        else:  # never for codes this kernel formed from valid weights; a guard against bad input
            cuda.atomic.add(bad, 0, 1)
    if r < low.shape[0]:
        lo = low[r]
        hi = high[r]
        if code < lo:
            cuda.atomic.add(counts, (0, r), 1)
        elif code == lo:
            cuda.atomic.add(counts, (1, r), 1)
        if code > hi:
            cuda.atomic.add(counts, (2, r), 1)
        elif code == hi:
            cuda.atomic.add(counts, (3, r), 1)


# ----------------------------------------------------------------------------- kernels


@cuda.jit
def _ranks_kernel(P, mask, first, out):
    t = cuda.grid(1)
    m = P.shape[0]
    if t < P.shape[1]:
        v = cuda.local.array(MAX_MODELS, numba.int64)
        _load_keys(P, t, m, mask, v)
        for a in range(m):
            out[a, t] = _rank2(v, a, m, first)


@cuda.jit
def _screen_kernel(P, mask, C, after, first, out_t, out_p, hist_t, off_t, hist_p, off_p, n_hist,
                   low_t, high_t, cnt_t, low_p, high_p, cnt_p, bad):
    """Codes of token ``t`` for every row (``out_t``/``out_p`` with 0 rows skip a coefficient)."""
    t = cuda.grid(1)
    m = P.shape[0]
    if t >= P.shape[1]:
        return
    v = cuda.local.array(MAX_MODELS, numba.int64)  # each value is read from P once, coalesced across threads
    _load_keys(P, t, m, mask, v)
    if out_t.shape[0]:
        r2 = cuda.local.array(MAX_MODELS, numba.int32)
        for a in range(m):
            r2[a] = _rank2(v, a, m, first)
        for r in range(out_t.shape[0]):
            g = 0
            for a in range(m):
                g += C[r, a] * r2[a]
            out_t[r, t] = g
            _account(g, r, hist_t, off_t, n_hist, low_t, high_t, cnt_t, bad)
    if out_p.shape[0]:
        gt = cuda.local.array(MAX_MODELS, numba.uint32)
        for w in range(after.shape[1]):
            b0 = 32 * w
            b1 = min(m, b0 + 32)
            for a in range(m):
                pa = v[a]
                bits = numba.uint32(0)
                for b in range(b0, b1):
                    if v[b] < pa:
                        bits |= numba.uint32(1) << numba.uint32(b - b0)
                gt[a] = bits
            for r in range(out_p.shape[0]):
                s = 0
                for a in range(m):
                    s += cuda.popc(gt[a] & after[r, w, a])
                out_p[r, t] = s if w == 0 else out_p[r, t] + s
        for r in range(out_p.shape[0]):
            _account(out_p[r, t], r, hist_p, off_p, n_hist, low_p, high_p, cnt_p, bad)


@cuda.jit
def _histogram_kernel(codes, off, out, bad):
    t = cuda.grid(1)
    if t < codes.shape[1]:
        for r in range(codes.shape[0]):
            j = codes[r, t] + off
            if 0 <= j < out.shape[1]:
                cuda.atomic.add(out, (r, j), 1)
            else:
                cuda.atomic.add(bad, 0, 1)


@cuda.jit
def _tail_counts_kernel(codes, low, high, counts):
    t = cuda.grid(1)
    if t < codes.shape[1]:
        for r in range(codes.shape[0]):
            c = codes[r, t]
            if c < low[r]:
                cuda.atomic.add(counts, (0, r), 1)
            elif c == low[r]:
                cuda.atomic.add(counts, (1, r), 1)
            if c > high[r]:
                cuda.atomic.add(counts, (2, r), 1)
            elif c == high[r]:
                cuda.atomic.add(counts, (3, r), 1)


# ----------------------------------------------------------------------------- host side


def _launch(kernel: Any, n: int, xp: Any, *args: Any) -> None:
    """Launch over ``n`` tokens; on CuPy arrays on CuPy's current stream (ordered with its work)."""
    blocks = max(1, (n + THREADS - 1) // THREADS)
    if _is_cupy(xp) and not numba.config.ENABLE_CUDASIM:  # type: ignore[attr-defined]  # set at runtime by numba
        import cupy

        stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        kernel[blocks, THREADS, stream](*args)
    else:
        kernel[blocks, THREADS](*args)


def _is_cupy(xp: Any) -> bool:
    return "cupy" in getattr(xp, "__name__", "")


#: Integer type of the same width as each float type, and the mask of its magnitude bits.
_BITS = {2: (np.int16, 0x7FFF), 4: (np.int32, 0x7FFF_FFFF), 8: (np.int64, 0x7FFF_FFFF_FFFF_FFFF)}


def _keys(P: Any) -> tuple[Any, int, Any]:
    """``P``'s bits as the kernels read them: a same-width integer *view* (no copy, so float16 stays
    two bytes a value on the device), the magnitude mask, and the namespace.  Integer types are
    widened to float64 first (exact below 2**53)."""
    xp = array_namespace(P)
    if P.dtype not in (xp.float16, xp.float32, xp.float64):
        P = xp.astype(P, xp.float64)
    bits, mask = _BITS[P.dtype.itemsize]
    return P.view(bits), mask, xp


def after_masks(pos: Any, m: int) -> np.ndarray:
    """``AFTER[r, w, a]`` (uint32, (B, W, m)): bit ``b - 32w`` set when ``pos[r, b] > pos[r, a]``."""
    pos = to_host(pos).astype(np.int64)
    B = pos.shape[0]
    W = (m + 31) // 32
    later = np.zeros((B, m, 32 * W), dtype=np.uint64)
    later[:, :, :m] = pos[:, None, :] > pos[:, :, None]  # [r, a, b]
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    words = (later.reshape(B, m, W, 32) * weights).sum(axis=3, dtype=np.uint64)  # [r, a, w]
    return np.ascontiguousarray(words.transpose(0, 2, 1)).astype(np.uint32)


def doubled_ranks(P: Any, ties: str = "average") -> Any:
    """``2·rank`` over axis 0 as int32 (m, n), exact; see the portable version for the definition."""
    first = check_ties(ties) == "first"
    P, mask, xp = _keys(P)
    out = xp.empty(P.shape, dtype=xp.int32)
    _launch(_ranks_kernel, P.shape[1], xp, P, mask, first, out)
    return out


def screen_chunk(
    P: Any, C: Any = None, pos: Any = None, ties: str = "average", *,
    hist: tuple[Any, Any] | None = None, offsets: tuple[int, int] = (0, 0), n_hist: int = 0,
    bounds: tuple[Any, Any, Any, Any] | None = None,
) -> dict[str, Any]:
    """Codes of one chunk for every row, plus histogram and tail counts, in one launch.

    Parameters
    ----------
    P : array (m, n), float16/32/64 (numpy under the simulator, CuPy on a GPU)
        NLLs (no NaN).
    C : array (B, m) of int, optional
        Thrush weights (:func:`~bsig_array.kernels.thrush.thrush_weights`); ``None`` skips Thrush.
    pos : array (B', m) of int, optional
        Positions in the stable y-sort (:func:`~bsig_array.kernels.preselect.preselect_positions`);
        ``None`` skips Pre-select.
    ties : {"average", "first"}
    hist : (int64 (B, n_bins_thrush) or None, int64 (B', n_bins_preselect) or None), optional
        Accumulators (in ``P``'s namespace) that rows ``< n_hist`` are counted into, in place.
    offsets : (int, int)
        Lattice offsets (``bin = code + offset``) of Thrush and Pre-select.
    n_hist : int
        Rows histogrammed (the observed rows; label-permuted rows follow them).
    bounds : (low_t, high_t, low_p, high_p), optional
        Boundary codes (int64, one per row, or fewer: rows past them are not tested); per-row
        counts of ``code < low``, ``== low``, ``> high``, ``== high`` are returned.

    Returns
    -------
    dict: ``"thrush"``/``"preselect"`` (rows, n) int32 codes (absent when skipped) and, with
    ``bounds``, ``"thrush_counts"``/``"preselect_counts"`` (rows, 4) int64.
    """
    first = check_ties(ties) == "first"
    P, mask, xp = _keys(P)
    m, n = P.shape
    if m > MAX_MODELS:
        raise KernelInputError(f"need 2..{MAX_MODELS} models on axis 0 of P, got {m}")
    i32, i64 = xp.int32, xp.int64
    Cd = xp.zeros((0, m), dtype=i32) if C is None else xp.asarray(to_host(C).astype(np.int32))
    after = after_masks(pos, m) if pos is not None else np.zeros((0, 1, m), dtype=np.uint32)
    afterd = xp.asarray(after)
    out_t = xp.empty((Cd.shape[0], n), dtype=i32)
    out_p = xp.empty((afterd.shape[0], n), dtype=i32)
    h_t, h_p = hist if hist is not None else (None, None)
    h_t = xp.zeros((0, 1), dtype=i64) if h_t is None else h_t
    h_p = xp.zeros((0, 1), dtype=i64) if h_p is None else h_p
    if n_hist and ((out_t.shape[0] and h_t.shape[0] < n_hist) or (out_p.shape[0] and h_p.shape[0] < n_hist)):
        raise KernelInputError(f"histogram accumulators need {n_hist} rows")
    empty = xp.zeros(0, dtype=i64)
    lt, ht, lp, hp = (empty,) * 4 if bounds is None else (xp.asarray(to_host(b).astype(np.int64)) for b in bounds)
    cnt_t = xp.zeros((4, out_t.shape[0]), dtype=i64)
    cnt_p = xp.zeros((4, out_p.shape[0]), dtype=i64)
    bad = xp.zeros(1, dtype=i64)
    if n:
        _launch(_screen_kernel, n, xp, P, mask, Cd, afterd, first, out_t, out_p, h_t, int(offsets[0]), h_p,
                int(offsets[1]), int(n_hist), lt, ht, cnt_t, lp, hp, cnt_p, bad)
    if n_hist and int(to_host(bad)[0]):
        raise KernelInputError("codes outside the lattice: Thrush weights are not those of a score row")
    out: dict[str, Any] = {}
    if C is not None:
        out["thrush"] = out_t
    if pos is not None:
        out["preselect"] = out_p
    if bounds is not None:
        out["thrush_counts"], out["preselect_counts"] = cnt_t.T, cnt_p.T
    return out


def thrush_codes(P: Any, C: Any, ties: str = "average") -> Any:
    """``2γ = C · (2R)`` (int32, (B, n))."""
    return screen_chunk(P, C, None, ties)["thrush"]


def preselect_codes(P: Any, pos: Any) -> Any:
    """``η·Z`` (int32, (B, n)) given positions ``pos`` (B, m) in the stable y-sort."""
    return screen_chunk(P, None, pos)["preselect"]


def screen_codes(P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[Any, Any]:
    """Thrush and Pre-select codes from one launch."""
    out = screen_chunk(P, C, pos, ties)
    return out["thrush"], out["preselect"]


def histogram_codes(codes: Any, offset: int, n_bins: int, out: Any = None) -> Any:
    """Per-row counts of ``codes + offset`` added into ``out`` (int64 (B, n_bins), kept on the device)."""
    xp = array_namespace(codes)
    B, n = codes.shape
    if out is None:
        out = xp.zeros((B, n_bins), dtype=xp.int64)
    bad = xp.zeros(1, dtype=xp.int64)
    if n:
        _launch(_histogram_kernel, n, xp, codes, int(offset), out, bad)
    if int(to_host(bad)[0]):
        raise KernelInputError(f"codes outside the lattice [{-offset}, {n_bins - offset - 1}]")
    return out


def tail_counts(codes: Any, low_code: Any, high_code: Any) -> Any:
    """Per-row counts (int64, (B, 4)): ``code < low``, ``== low``, ``> high``, ``== high``."""
    xp = array_namespace(codes)
    B, n = codes.shape
    counts = xp.zeros((4, B), dtype=xp.int64)
    low = xp.asarray(to_host(low_code).astype(np.int64))
    high = xp.asarray(to_host(high_code).astype(np.int64))
    if n:
        _launch(_tail_counts_kernel, n, xp, codes, low, high, counts)
    return counts.T


def tail_members(codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers:
    """See :func:`bsig_array.kernels.backend_portable.tail_members` (array-API code on the same arrays)."""
    return _portable.tail_members(codes, token_ids, bounds)
