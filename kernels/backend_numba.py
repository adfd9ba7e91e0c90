"""Numba CPU fast path of the screening kernels (backend ``"numba"``), tested against the portable one.

Layout: ``P`` is (m, n) with tokens contiguous, so every inner loop runs over a block of ``_T``
tokens and LLVM vectorizes it (AVX2/AVX-512); blocks are spread over threads with ``prange``.

* ranks: per block, pairwise comparison counts (m² compares per token, branch-free, vectorized);
* Thrush: ranks and the product ``C · 2R`` fused per token block, on AVX-512 VNNI (u8 ranks ·
  s8 weights) where the CPU has it, else in float32 (exact, see :mod:`~bsig_array.kernels.thrush`);
  both measured faster than ranks + a BLAS product with K = m;
* Pre-select: per token, bitmasks ``GT[a] = {b : p_b < p_a}`` (uint32 words); per benchmark
  ``code = Σ_a popcount(GT[a] & AFTER[a])`` with ``AFTER[a] = {b : pos(b) > pos(a)}`` precomputed
  once per call — an inversion count with m ANDs + popcounts per benchmark and token;
* both methods (:func:`screen_codes`): one comparison pass feeds the ranks and the bitmasks;
* histograms accumulate in place per row; tails count, then fill, one scan of each row each.

float16 input is ranked through an order-preserving integer key of its bits (-0.0 mapped to +0.0),
so no float32 copy of the chunk is made.
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from bsig_array.kernels._checks import check_ties
from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.types import RowSets, TailBounds, TailMembers

name = "numba"
_T = 128  # tokens per inner block: keys (m × _T) and bitmasks stay in L1
# AVX-512 VNNI: the Thrush product as u8 ranks · s8 weights, 64 multiply-adds per instruction
# (needs 2R ≤ 255 and |c| ≤ 127, i.e. m ≤ 127).  Tests switch it off to cover the float path.
# Off when numba targets another CPU than the host (NUMBA_CPU_NAME), where the intrinsic may not exist.
_USE_VNNI = numba.config.CPU_NAME in (None, "host") and bool(  # type: ignore[attr-defined]  # set at runtime by numba
    llvm.get_host_cpu_features().get("avx512vnni", False)
)
_VNNI_MAX_MODELS = 127


@intrinsic
def _popcount(typingctx, x):
    """``llvm.ctpop`` on an integer (a single instruction, vectorized to VPOPCNT where available)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


@intrinsic
def _dpbusd16(typingctx, acc, acc_at, x, x_at, w):
    """``acc[acc_at + i] += Σ_j x[x_at + 4i + j] · w_j`` for i < 16, j < 4 (u8 · s8, int32 sums).

    One ``vpdpbusd`` on 512 bits; ``w`` packs four signed bytes.  Only compiled when the CPU has
    AVX-512 VNNI (see ``_USE_VNNI``).
    """
    sig = types.void(acc, types.intp, x, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        acc_v, acc_at_v, x_v, x_at_v, w_v = args
        acc_arr = context.make_array(signature.args[0])(context, builder, acc_v)
        x_arr = context.make_array(signature.args[2])(context, builder, x_v)
        v16 = ir.VectorType(ir.IntType(32), 16)
        p_acc = builder.bitcast(builder.gep(acc_arr.data, [acc_at_v]), v16.as_pointer())
        p_x = builder.bitcast(builder.gep(x_arr.data, [x_at_v]), v16.as_pointer())
        w_vec = builder.insert_element(ir.Constant(v16, ir.Undefined), w_v, ir.Constant(ir.IntType(32), 0))
        w_vec = builder.shuffle_vector(w_vec, ir.Constant(v16, ir.Undefined), ir.Constant(v16, [0] * 16))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512"
        )
        total = builder.call(fn, [builder.load(p_acc, align=4), builder.load(p_x, align=1), w_vec])
        builder.store(total, p_acc, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _key(x):  # pragma: no cover - replaced by the overload below inside numba
    return x


@overload(_key)
def _key_impl(x):
    if x == types.uint16:
        # float16 bits -> an int whose order is the float order; -0.0 (0x8000) counts as +0.0
        def impl(x):
            v = np.int32(x)
            if v == 0x8000:
                v = 0
            if v & 0x8000:
                return np.float32(0x8000 - (v & 0x7FFF))  # negative: larger magnitude sorts lower
            return np.float32(0x8000 + v)

        return impl
    return lambda x: x


def _as_keys(P: np.ndarray) -> np.ndarray:
    """``P`` as numba can read it: float16 viewed as its uint16 bits, float32/64 as they are."""
    P = np.asarray(P)
    if P.dtype == np.float16:
        return np.ascontiguousarray(P).view(np.uint16)
    if P.dtype not in (np.float32, np.float64):
        P = P.astype(np.float64)
    return np.ascontiguousarray(P)


@njit(cache=True, inline="always")
def _load_keys(src, t0, w, key):
    m = src.shape[0]
    for a in range(m):
        for t in range(w):
            key[a, t] = _key(src[a, t0 + t])
        for t in range(w, key.shape[1]):
            key[a, t] = key[a, 0]


@njit(cache=True, inline="always")
def _rank_block(key, first, r2):
    """``2·rank`` of each column of ``key`` (m, _T) into ``r2`` (m, _T) float32 (exact integers).

    average: ``2R_a = 1 + Σ_b ([p_b<p_a] + [p_b≤p_a])`` (midranks); first: ``2R_a = 2 + 2·Σ_b
    [b before a]`` where b is before a if ``p_b < p_a``, or ``p_b == p_a`` and ``b < a``.
    """
    m = key.shape[0]
    acc = np.empty(_T, np.int32)
    for a in range(m):
        acc[:] = 2 if first else 1
        for b in range(m):
            if first and b < a:
                for t in range(_T):
                    acc[t] += np.int32(2) * np.int32(key[b, t] <= key[a, t])
            elif first:
                for t in range(_T):
                    acc[t] += np.int32(2) * np.int32(key[b, t] < key[a, t])
            else:
                for t in range(_T):
                    acc[t] += np.int32(key[b, t] < key[a, t]) + np.int32(key[b, t] <= key[a, t])
        for t in range(_T):
            r2[a, t] = acc[t]


@njit(cache=True, inline="always")
def _bits_block(key, gt):
    """Bitmasks ``gt[w, a, t]``: bit b (word w = b // 32) set when ``p_b < p_a``."""
    m = key.shape[0]
    gt[:, :, :] = 0
    for a in range(m):
        for b in range(m):
            bit = np.uint32(1) << np.uint32(b & 31)
            wi = b >> 5
            for t in range(_T):
                gt[wi, a, t] |= np.uint32(key[b, t] < key[a, t]) * bit


@njit(cache=True, inline="always")
def _rank_bits_block(key, first, r2, gt):
    """:func:`_rank_block` and :func:`_bits_block` from one pass of comparisons."""
    m = key.shape[0]
    gt[:, :, :] = 0
    acc = np.empty(_T, np.int32)
    for a in range(m):
        acc[:] = 2 if first else 1
        for b in range(m):
            bit = np.uint32(1) << np.uint32(b & 31)
            wi = b >> 5
            for t in range(_T):
                lt = np.int32(key[b, t] < key[a, t])
                le = np.int32(key[b, t] <= key[a, t])
                if first:
                    acc[t] += np.int32(2) * (le if b < a else lt)
                else:
                    acc[t] += lt + le
                gt[wi, a, t] |= np.uint32(lt) * bit
        for t in range(_T):
            r2[a, t] = acc[t]


@njit(cache=True, inline="always")
def _thrush_product(r2, C, g, out, t0, w):
    """``out[:, t0:t0+w] = C · r2`` in float32, 4 benchmarks per pass over ``r2``."""
    m = r2.shape[0]
    nb = C.shape[0]
    for r0 in range(0, nb, 4):
        g[:, :] = 0
        nr = min(4, nb - r0)
        if nr == 4:
            for a in range(m):
                c0, c1, c2, c3 = C[r0, a], C[r0 + 1, a], C[r0 + 2, a], C[r0 + 3, a]
                for t in range(_T):
                    x = r2[a, t]
                    g[0, t] += c0 * x
                    g[1, t] += c1 * x
                    g[2, t] += c2 * x
                    g[3, t] += c3 * x
        else:
            for j in range(nr):
                for a in range(m):
                    c = C[r0 + j, a]
                    for t in range(_T):
                        g[j, t] += c * r2[a, t]
        for j in range(nr):
            for t in range(w):
                out[r0 + j, t0 + t] = np.int32(g[j, t])


@njit(cache=True, inline="always")
def _thrush_product_vnni(r2, Cw, X, acc, out, t0, w):
    """``out[:, t0:t0+w] = C · r2`` with u8 ranks · s8 weights on VNNI (``Cw`` packed by 4)."""
    m = r2.shape[0]
    nb, G = Cw.shape
    # bytes of 4 consecutive models per token: X[(g·_T + t)·4 + j] = 2R of model 4g + j
    X[:] = 0
    for a in range(m):
        g, j = a >> 2, a & 3
        for t in range(_T):
            X[(g * _T + t) * 4 + j] = np.uint8(r2[a, t])
    for r in range(nb):
        acc[:] = 0
        for g in range(G):
            c = Cw[r, g]
            for tb in range(0, _T, 16):
                _dpbusd16(acc, tb, X, (g * _T + tb) * 4, c)  # type: ignore[call-arg]  # numba supplies typingctx
        for t in range(w):
            out[r, t0 + t] = acc[t]


@njit(cache=True, inline="always")
def _preselect_product(gt, after, acc, out, t0, w):
    """``out[r, t0+t] = Σ_a popcount(gt[a, t] & after[r, a])`` (inversion counts)."""
    nb, n_words, m = after.shape
    for r in range(nb):
        acc[:] = 0
        for wi in range(n_words):
            for a in range(m):
                mask = after[r, wi, a]
                for t in range(_T):
                    acc[t] += _popcount(gt[wi, a, t] & mask)  # type: ignore[call-arg]  # numba supplies typingctx
        for t in range(w):
            out[r, t0 + t] = acc[t]


@njit(parallel=True, cache=True)
def _doubled_ranks(src, first, out, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        r2 = np.empty((m, _T), np.float32)
        _rank_block(key, first, r2)
        for a in range(m):
            for t in range(w):
                out[a, t0 + t] = r2[a, t]


@njit(parallel=True, cache=True)
def _thrush(src, C, first, out, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        r2 = np.empty((m, _T), np.float32)
        _rank_block(key, first, r2)
        _thrush_product(r2, C, np.empty((4, _T), np.float32), out, t0, w)


@njit(parallel=True, cache=True)
def _thrush_vnni(src, Cw, first, out, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        r2 = np.empty((m, _T), np.float32)
        _rank_block(key, first, r2)
        X = np.empty(Cw.shape[1] * _T * 4, np.uint8)
        _thrush_product_vnni(r2, Cw, X, np.empty(_T, np.int32), out, t0, w)


@njit(parallel=True, cache=True)
def _preselect(src, after, out, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        gt = np.empty((after.shape[1], m, _T), np.uint32)
        _bits_block(key, gt)
        _preselect_product(gt, after, np.empty(_T, np.uint32), out, t0, w)


@njit(parallel=True, cache=True)
def _both(src, C, after, first, out_t, out_p, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        r2 = np.empty((m, _T), np.float32)
        gt = np.empty((after.shape[1], m, _T), np.uint32)
        _rank_bits_block(key, first, r2, gt)
        _thrush_product(r2, C, np.empty((4, _T), np.float32), out_t, t0, w)
        _preselect_product(gt, after, np.empty(_T, np.uint32), out_p, t0, w)


@njit(parallel=True, cache=True)
def _both_vnni(src, Cw, after, first, out_t, out_p, proto):
    m, n = src.shape
    for bi in prange((n + _T - 1) // _T):
        t0 = bi * _T
        w = min(_T, n - t0)
        key = np.empty((m, _T), proto.dtype)
        _load_keys(src, t0, w, key)
        r2 = np.empty((m, _T), np.float32)
        gt = np.empty((after.shape[1], m, _T), np.uint32)
        _rank_bits_block(key, first, r2, gt)
        X = np.empty(Cw.shape[1] * _T * 4, np.uint8)
        _thrush_product_vnni(r2, Cw, X, np.empty(_T, np.int32), out_t, t0, w)
        _preselect_product(gt, after, np.empty(_T, np.uint32), out_p, t0, w)


def _pack_weights(C: np.ndarray) -> np.ndarray:
    """Weights (B, m) as int32 words of 4 signed bytes (models 4g..4g+3, zero-padded)."""
    B, m = C.shape
    G = (m + 3) // 4
    packed = np.zeros((B, 4 * G), np.int8)
    packed[:, :m] = C
    return packed.view(np.int32).reshape(B, G)


def _proto(src: np.ndarray) -> np.ndarray:
    return np.empty(0, np.float64 if src.dtype == np.float64 else np.float32)


def _check_ties(ties: str) -> bool:
    return check_ties(ties) == "first"


def _vnni(m: int) -> bool:
    return _USE_VNNI and m <= _VNNI_MAX_MODELS


def doubled_ranks(P: Any, ties: str = "average") -> np.ndarray:
    """``2·rank`` over axis 0 as float32 (m, n); see the portable version for the definition."""
    first = _check_ties(ties)
    src = _as_keys(P)
    out = np.empty(src.shape, np.float32)
    _doubled_ranks(src, first, out, _proto(src))
    return out


def thrush_codes(P: Any, C: Any, ties: str = "average") -> np.ndarray:
    """``2γ = C · (2R)`` as int32 (B, n), ranks and product fused per token block.

    Exact small-integer arithmetic (float32 or VNNI int32, see thrush.py): the int32 result is exact.
    """
    first = _check_ties(ties)
    src = _as_keys(P)
    C = np.asarray(C)
    out = np.empty((C.shape[0], src.shape[1]), np.int32)
    if _vnni(src.shape[0]):
        _thrush_vnni(src, _pack_weights(C), first, out, _proto(src))
    else:
        _thrush(src, np.ascontiguousarray(C, dtype=np.float32), first, out, _proto(src))
    return out


@njit(cache=True)
def _after_masks(pos, n_words):
    """``AFTER[B, w, a]``: bits b (word w) with ``pos[B, b] > pos[B, a]``."""
    nb, m = pos.shape
    after = np.zeros((nb, n_words, m), np.uint32)
    for r in range(nb):
        for a in range(m):
            for b in range(m):
                if pos[r, b] > pos[r, a]:
                    after[r, b >> 5, a] |= np.uint32(1) << np.uint32(b & 31)
    return after


def preselect_codes(P: Any, pos: Any) -> np.ndarray:
    """``η·Z`` as int32 (B, n) given positions ``pos`` (B, m) in the stable y-sort."""
    src = _as_keys(P)
    m, n = src.shape
    pos = np.ascontiguousarray(np.asarray(pos), dtype=np.int64)
    after = _after_masks(pos, (m + 31) // 32)
    out = np.empty((pos.shape[0], n), np.int32)
    _preselect(src, after, out, _proto(src))
    return out


def screen_codes(P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[np.ndarray, np.ndarray]:
    """Thrush and Pre-select codes from one pass of comparisons (shared by ranks and bitmasks)."""
    first = _check_ties(ties)
    src = _as_keys(P)
    m, n = src.shape
    C = np.asarray(C)
    pos = np.ascontiguousarray(np.asarray(pos), dtype=np.int64)
    after = _after_masks(pos, (m + 31) // 32)
    out_t = np.empty((C.shape[0], n), np.int32)
    out_p = np.empty((pos.shape[0], n), np.int32)
    if _vnni(m):
        _both_vnni(src, _pack_weights(C), after, first, out_t, out_p, _proto(src))
    else:
        _both(src, np.ascontiguousarray(C, dtype=np.float32), after, first, out_t, out_p, _proto(src))
    return out_t, out_p


@njit(cache=True, inline="always")
def _in_lattice(j, n_bins):
    return (j >= 0) & (j < n_bins)


@njit(parallel=True, cache=True)
def _histogram(codes, offset, out):
    """Add per-row counts of ``codes + offset`` into ``out``; returns how many fell off the lattice.

    Neighbouring tokens often share a bin; four interleaved sub-histograms break the
    load-increment-store dependency between them (measured ~1.3× on one core).
    """
    nb, n = codes.shape
    n_bins = out.shape[1]
    n4 = n - n % 4
    bad = 0
    for r in prange(nb):
        sub = np.zeros((4, n_bins), np.int32)
        for t in range(0, n4, 4):
            j0, j1 = codes[r, t] + offset, codes[r, t + 1] + offset
            j2, j3 = codes[r, t + 2] + offset, codes[r, t + 3] + offset
            ok = _in_lattice(j0, n_bins) & _in_lattice(j1, n_bins)
            if ok & _in_lattice(j2, n_bins) & _in_lattice(j3, n_bins):
                sub[0, j0] += 1
                sub[1, j1] += 1
                sub[2, j2] += 1
                sub[3, j3] += 1
            else:
                bad += 1
        for t in range(n4, n):
            j = codes[r, t] + offset
            if _in_lattice(j, n_bins):
                sub[0, j] += 1
            else:
                bad += 1
        row = out[r]
        for j in range(n_bins):
            row[j] += sub[0, j] + sub[1, j] + sub[2, j] + sub[3, j]
    return bad


def histogram_codes(codes: Any, offset: int, n_bins: int, out: Any = None) -> np.ndarray:
    """Exact per-row counts of ``codes + offset``, accumulated in place into ``out`` (int64)."""
    codes = np.ascontiguousarray(codes)
    if codes.shape[1] >= 2**31:
        raise KernelInputError("histogram_codes counts at most 2**31 - 1 tokens per call; pass smaller blocks")
    if out is None:
        out = np.zeros((codes.shape[0], n_bins), np.int64)
    if _histogram(codes, np.int64(offset), out):
        raise KernelInputError(f"codes outside the lattice [{-offset}, {n_bins - offset - 1}]")
    return out


@njit(parallel=True, cache=True)
def _tail_counts(codes, low, high):
    nb, n = codes.shape
    counts = np.zeros((4, nb), np.int64)  # low beyond, low at, high beyond, high at
    for r in prange(nb):
        lo, hi = low[r], high[r]
        c0 = c1 = c2 = c3 = 0
        for t in range(n):
            c = codes[r, t]
            c0 += c < lo
            c1 += c == lo
            c2 += c > hi
            c3 += c == hi
        counts[0, r], counts[1, r], counts[2, r], counts[3, r] = c0, c1, c2, c3
    return counts


@njit(parallel=True, cache=True)
def _tail_fill(codes, ids, low, high, ptr, tok, code):
    nb, n = codes.shape
    for r in prange(nb):
        lo, hi = low[r], high[r]
        i0, i1, i2, i3 = ptr[0, r], ptr[1, r], ptr[2, r], ptr[3, r]
        for t in range(n):
            c = codes[r, t]
            if c < lo:
                tok[0, i0], code[0, i0] = ids[t], c
                i0 += 1
            elif c == lo:
                tok[1, i1], code[1, i1] = ids[t], c
                i1 += 1
            if c > hi:
                tok[2, i2], code[2, i2] = ids[t], c
                i2 += 1
            elif c == hi:
                tok[3, i3], code[3, i3] = ids[t], c
                i3 += 1


@njit(parallel=True, cache=True)
def _lowest_ids(tok, ptr, take, new_ptr, out):
    """Per row, the ``take`` lowest ids of ``tok[ptr[r]:ptr[r+1]]``, sorted, into ``out``."""
    for r in prange(ptr.shape[0] - 1):
        seg = np.sort(tok[ptr[r] : ptr[r + 1]])
        k = new_ptr[r + 1] - new_ptr[r]
        out[new_ptr[r] : new_ptr[r] + k] = seg[:k]


def tail_counts(codes: Any, low_code: Any, high_code: Any) -> np.ndarray:
    """Per-row counts (int64, (B, 4)): ``code < low``, ``== low``, ``> high``, ``== high``."""
    codes = np.ascontiguousarray(codes)
    return _tail_counts(codes, np.asarray(low_code, np.int64), np.asarray(high_code, np.int64)).T.copy()


def tail_members(codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers:
    """One chunk's tail members; ``*_at`` sets are sorted by id, ``*_beyond`` keep chunk order."""
    codes = np.ascontiguousarray(codes)
    ids = np.ascontiguousarray(token_ids, dtype=np.int64)
    low = np.asarray(bounds.low_code, np.int64)
    high = np.asarray(bounds.high_code, np.int64)
    counts = _tail_counts(codes, low, high)
    ptr = np.zeros((4, codes.shape[0] + 1), np.int64)
    np.cumsum(counts, axis=1, out=ptr[:, 1:])
    size = int(ptr[:, -1].max(initial=0))
    tok = np.empty((4, size), np.int64)
    code = np.empty((4, size), np.int32)
    _tail_fill(codes, ids, low, high, ptr, tok, code)
    sets = []
    for s in range(4):
        t, c, p = tok[s, : ptr[s, -1]], code[s, : ptr[s, -1]], ptr[s]
        if s in (1, 3):  # at the boundary: keep only the `take` lowest ids of this chunk
            take = np.asarray(bounds.low_take if s == 1 else bounds.high_take, np.int64)
            new_ptr = np.zeros_like(p)
            np.cumsum(np.minimum(np.diff(p), take), out=new_ptr[1:])
            t_new = np.empty(int(new_ptr[-1]), np.int64)
            _lowest_ids(t, p, take, new_ptr, t_new)
            edge = low if s == 1 else high
            c = np.repeat(edge.astype(np.int32), np.diff(new_ptr))
            t, p = t_new, new_ptr
        sets.append(RowSets(ptr=p, token=t.copy(), code=c.copy()))
    return TailMembers(*sets)
