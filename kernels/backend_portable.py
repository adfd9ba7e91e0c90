"""Portable array-API implementations of the screening kernels (backend ``"numpy"``).

Written against the array API standard only (namespace from ``array_api_compat.array_namespace``),
so the same code runs on numpy, ``array_api_strict`` (tests) and CuPy.  It favours clarity over speed
(pairwise comparisons, O(m²) per token, in token blocks that bound temporaries to ~``_BLOCK_BYTES``);
:mod:`bsig_array.kernels.backend_numba` is the CPU fast path tested against it.

Exactness: every count/product below is an integer far below 2**53, computed in float64 (or
integer) arithmetic, so results are exact in any summation order.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from bsig_array.kernels._checks import check_ties
from bsig_array.kernels.errors import KernelInputError
from bsig_array.kernels.types import RowSets, TailBounds, TailMembers

name = "numpy"
_BLOCK_BYTES = 32 * 2**20


def _block(m: int, n: int, bytes_per_token: int) -> int:
    return max(1, min(n, _BLOCK_BYTES // max(bytes_per_token, 1)))


def doubled_ranks(P: Any, ties: str = "average") -> Any:
    """``2·rank`` of each entry of ``P`` (m, n) over the model axis 0, as float64 (exact integers).

    ``ties="average"``: midranks (``2·rank = 2·#less + #equal + 1``, ``#equal`` including itself);
    ``ties="first"``: ordinal ranks in store order (``2·(1 + #less + #equal-before)``).
    """
    check_ties(ties)
    xp = array_namespace(P)
    m, n = P.shape
    step = _block(m, n, 8 * m * m)
    ia = xp.arange(m)
    before = xp.astype(ia[None, :] < ia[:, None], xp.float64)[:, :, None]  # [a, b] = b < a
    out = []
    for s in range(0, n, step):
        blk = P[:, s : s + step]
        pa, pb = blk[:, None, :], blk[None, :, :]
        less = xp.sum(xp.astype(pb < pa, xp.float64), axis=1)
        eq = xp.astype(pb == pa, xp.float64)
        if ties == "average":
            out.append(2.0 * less + xp.sum(eq, axis=1) + 1.0)
        else:
            out.append(2.0 * (1.0 + less + xp.sum(eq * before, axis=1)))
    return xp.concat(out, axis=1) if out else xp.zeros((m, 0), dtype=xp.float64)


def thrush_codes(P: Any, C: Any, ties: str = "average") -> Any:
    """``2γ = C · (2R)`` (int32, (B, n)) for integer Thrush weights ``C`` (B, m)."""
    xp = array_namespace(P)
    R2 = doubled_ranks(P, ties)
    return xp.astype(xp.round(xp.matmul(xp.astype(C, xp.float64), R2)), xp.int32)


def preselect_codes(P: Any, pos: Any) -> Any:
    """``η·Z`` (int32, (B, n)) given each model's position ``pos`` (B, m) in the stable y-sort.

    Over index pairs ``a < b``: the pair is an inversion when the model placed first in y-order has
    the larger NLL, i.e. ``[pos_a<pos_b]·[p_a>p_b] + [pos_a>pos_b]·[p_b>p_a]``
    ``= [p_b>p_a] + [pos_a<pos_b]·sign(p_a-p_b)``, so all benchmarks at once are one
    (B × Z)·(Z × n) product plus a per-token count.
    """
    xp = array_namespace(P)
    m, n = P.shape
    ia, ib = _pairs(xp, m)
    pos_a = xp.take(pos, ia, axis=1)
    pos_b = xp.take(pos, ib, axis=1)
    A = xp.astype(pos_a < pos_b, xp.float64)  # (B, Z)
    step = _block(m, n, 8 * 3 * ia.shape[0])
    out = []
    for s in range(0, n, step):
        blk = P[:, s : s + step]
        pa, pb = xp.take(blk, ia, axis=0), xp.take(blk, ib, axis=0)
        sgn = xp.astype(pa > pb, xp.float64) - xp.astype(pa < pb, xp.float64)
        v = xp.sum(xp.astype(pb > pa, xp.float64), axis=0)
        out.append(xp.astype(xp.round(xp.matmul(A, sgn) + v[None, :]), xp.int32))
    return xp.concat(out, axis=1) if out else xp.zeros((pos.shape[0], 0), dtype=xp.int32)


def screen_codes(P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[Any, Any]:
    """Thrush and Pre-select codes of the same block (two separate computations here)."""
    return thrush_codes(P, C, ties), preselect_codes(P, pos)


def _pairs(xp: Any, m: int) -> tuple[Any, Any]:
    """Index pairs ``a < b`` (row-major), as two int64 arrays of length Z."""
    ia = xp.arange(m)
    a = xp.reshape(xp.broadcast_to(ia[:, None], (m, m)), (-1,))
    b = xp.reshape(xp.broadcast_to(ia[None, :], (m, m)), (-1,))
    keep = xp.nonzero(a < b)[0]
    return xp.take(a, keep), xp.take(b, keep)


def histogram_codes(codes: Any, offset: int, n_bins: int, out: Any = None) -> Any:
    """Exact per-row counts of ``codes + offset`` over ``[0, n_bins)``, added into ``out``.

    No scatter in the array API: sort the flattened (row, bin) keys and count with ``searchsorted``.
    """
    xp = array_namespace(codes)
    B, n = codes.shape
    keys = xp.astype(codes, xp.int64) + offset
    if n and (xp.min(keys) < 0 or xp.max(keys) >= n_bins):
        raise KernelInputError(f"codes outside the lattice [{-offset}, {n_bins - offset - 1}]")
    rows = xp.arange(B, dtype=xp.int64)[:, None] * n_bins
    flat = xp.sort(xp.reshape(keys + rows, (-1,)))
    edges = xp.arange(B * n_bins + 1, dtype=xp.int64)
    idx = xp.searchsorted(flat, edges, side="left")
    hist = xp.reshape(idx[1:] - idx[:-1], (B, n_bins))
    if out is None:
        return xp.astype(hist, xp.int64)
    out += xp.astype(hist, xp.int64)
    return out


def tail_members(codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers:
    """One chunk's tail members (see :class:`~bsig_array.kernels.tails.TailMembers`)."""
    xp = array_namespace(codes)
    low = xp.asarray(bounds.low_code, dtype=xp.int64)[:, None]
    high = xp.asarray(bounds.high_code, dtype=xp.int64)[:, None]
    c = xp.astype(codes, xp.int64)
    return TailMembers(
        low_beyond=_rowsets(xp, codes, token_ids, c < low, None),
        low_at=_rowsets(xp, codes, token_ids, c == low, bounds.low_take),
        high_beyond=_rowsets(xp, codes, token_ids, c > high, None),
        high_at=_rowsets(xp, codes, token_ids, c == high, bounds.high_take),
    )


def tail_counts(codes: Any, low_code: Any, high_code: Any) -> Any:
    """Per-row counts (int64, (B, 4)): ``code < low``, ``== low``, ``> high``, ``== high``."""
    xp = array_namespace(codes)
    c = xp.astype(codes, xp.int64)
    low = xp.asarray(low_code, dtype=xp.int64)[:, None]
    high = xp.asarray(high_code, dtype=xp.int64)[:, None]
    cols = [c < low, c == low, c > high, c == high]
    return xp.stack([xp.sum(xp.astype(x, xp.int64), axis=1) for x in cols], axis=1)


def _rowsets(xp: Any, codes: Any, token_ids: Any, mask: Any, take: Any) -> RowSets:
    B = codes.shape[0]
    n = codes.shape[1]
    r, j = xp.nonzero(mask)  # row-major: grouped by row, chunk order within a row
    tok = xp.take(xp.astype(token_ids, xp.int64), j)
    code = xp.take(xp.reshape(codes, (-1,)), r * n + j)
    if take is not None and r.shape[0]:
        # keep the `take` lowest ids per row: order by (row, id), then rank within the row
        o = xp.argsort(tok, stable=True)
        r, tok, code = xp.take(r, o), xp.take(tok, o), xp.take(code, o)
        o = xp.argsort(r, stable=True)
        r, tok, code = xp.take(r, o), xp.take(tok, o), xp.take(code, o)
        start = xp.searchsorted(r, xp.arange(B, dtype=r.dtype), side="left")
        rank = xp.arange(r.shape[0], dtype=xp.int64) - xp.astype(xp.take(start, r), xp.int64)
        keep = xp.nonzero(rank < xp.take(xp.asarray(take, dtype=xp.int64), r))[0]
        r, tok, code = xp.take(r, keep), xp.take(tok, keep), xp.take(code, keep)
    ptr = xp.searchsorted(r, xp.arange(B + 1, dtype=r.dtype), side="left")
    return RowSets(ptr=xp.astype(ptr, xp.int64), token=tok, code=xp.astype(code, xp.int32))
