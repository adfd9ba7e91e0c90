"""Screen merge: running and final tail boundaries, members in flat form, and the allocation of ties.

Every merge here is order-free (sums, and unions with a token-id tie-break), so the result never
depends on chunking, scheduler or the order in which tasks finish.

A tail's order is the total order of (code, token id): ascending code for the low tail, descending
for the high tail, lowest id first among equal codes.  Its final ``k`` members are the first ``k``
in that order over the whole store, so a token behind the ``k``-th of any set of tokens containing
it can never enter (:func:`running_bounds`, :func:`tighter`): the final boundary lies at least as
far out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bsig_array import kernels as K


@dataclass(frozen=True)
class Members:
    """Tail members in flat form, grouped by ``key = 2·row + tail`` (tail 0 low, 1 high).

    ``token`` holds the chunk's *local* ids: the rank of each token's id within its chunk (its
    position when the ids increase along the store, as in every store bsig writes), so ties break
    by token id and every lookup is an index, never a search.
    """

    key: np.ndarray  # int32
    token: np.ndarray  # int32 local ids
    code: np.ndarray  # int32

    @property
    def size(self) -> int:
        return int(self.key.size)


def members_of(mb: K.TailMembers, host: Callable[[Any], np.ndarray] = np.asarray) -> Members:
    """A kernel's :class:`~bsig_array.kernels.TailMembers` (any namespace) as flat host :class:`Members`.

    Grouped by key in O(n) (a scatter, no sort): each key holds its beyond set, then its at set.
    """
    sets = [(0, mb.low_beyond), (0, mb.low_at), (1, mb.high_beyond), (1, mb.high_at)]
    ptrs = [host(r.ptr).astype(np.int64, copy=False) for _, r in sets]
    B = ptrs[0].size - 1
    counts = np.zeros(2 * B, dtype=np.int64)
    for (tail, _), ptr in zip(sets, ptrs):
        counts[tail::2] += np.diff(ptr)
    fill = np.zeros(2 * B, dtype=np.int64)
    np.cumsum(counts[:-1], out=fill[1:])
    total = int(counts.sum())
    token = np.empty(total, dtype=np.int32)
    code = np.empty(total, dtype=np.int32)
    for (tail, r), ptr in zip(sets, ptrs):
        n = np.diff(ptr)
        if not ptr[-1]:
            continue
        rows = np.repeat(np.arange(B), n)
        dest = fill[2 * rows + tail] + (np.arange(int(ptr[-1])) - ptr[rows])
        token[dest] = host(r.token)
        code[dest] = host(r.code)
        fill[tail::2] += n
    return Members(np.repeat(np.arange(2 * B, dtype=np.int32), counts), token, code)


def open_bounds(method: str, m: int, n_rows: int) -> K.TailBounds:
    """Boundaries that keep every token (before any prefix holds ``k`` tokens)."""
    offset, n_bins = K.lattice(method, m)
    low = np.full(n_rows, n_bins - offset, dtype=np.int64)  # past the largest code: everything is below
    high = np.full(n_rows, -offset - 1, dtype=np.int64)
    zero = np.zeros(n_rows, dtype=np.int64)
    return K.TailBounds(low_code=low, low_take=zero, high_code=high, high_take=zero.copy(), k=0)


def tighter(a: K.TailBounds, b: K.TailBounds) -> K.TailBounds:
    """Per row and tail the boundary further out of ``a`` and ``b`` (both valid cuts, so is this one)."""

    def pick(ca: np.ndarray, ta: np.ndarray, cb: np.ndarray, tb: np.ndarray, low: bool) -> tuple[np.ndarray, np.ndarray]:
        a_out = ca < cb if low else ca > cb
        code = np.where(a_out, ca, cb)
        take = np.where(ca == cb, np.minimum(ta, tb), np.where(a_out, ta, tb))
        return code, take

    lc, lt = pick(a.low_code, a.low_take, b.low_code, b.low_take, True)
    hc, ht = pick(a.high_code, a.high_take, b.high_code, b.high_take, False)
    return K.TailBounds(low_code=lc, low_take=lt, high_code=hc, high_take=ht, k=max(a.k, b.k))


def running_bounds(hist: np.ndarray, k: int, method: str, m: int) -> K.TailBounds | None:
    """The boundaries of the chunks counted so far (``None`` while they hold fewer than ``k`` tokens)."""
    if int(hist[0].sum()) < k:
        return None
    return K.tail_bounds(hist, k, method, m)


#: Speculative boundaries are used once the prefix is expected to hold this many final members per tail.
MIN_EXPECTED = 64


def speculative_bounds(hist: np.ndarray, k: int, d: int, method: str, m: int) -> K.TailBounds | None:
    """Boundaries around the share of the final tails a prefix is expected to hold (``None`` too early).

    A prefix of ``P`` of the ``d`` tokens is expected to hold ``μ = k·P/d`` of a tail's final
    members; the boundary of its first ``1.2·μ + 4·√μ + 16`` is far tighter than the ``k``-th
    (:func:`running_bounds`) yet, unless the store's order changes the score distribution, further
    out than the final boundary.  That is not guaranteed, so every chunk records the boundaries it
    used and those it cut too tight are read again (:func:`covers`): the result stays exact.
    """
    P = int(hist[0].sum())
    mu = k * P / d
    if mu < MIN_EXPECTED:
        return None
    target = int(np.ceil(1.2 * mu + 4 * np.sqrt(mu) + 16))
    if target >= k or target > P:
        return None
    return K.tail_bounds(hist, target, method, m)


def covers(used: K.TailBounds, final: K.TailBounds) -> bool:
    """Whether members collected against ``used`` include every final member (every row, both tails).

    They do where the final boundary lies further out, or at the same code with a take no larger.
    """
    low = (final.low_code < used.low_code) | ((final.low_code == used.low_code) & (final.low_take <= used.low_take))
    high = (final.high_code > used.high_code) | (
        (final.high_code == used.high_code) & (final.high_take <= used.high_take)
    )
    return bool(np.all(low) and np.all(high))


def segments(spans: Sequence[tuple[int, int, int, bool]]) -> list[list[int]]:
    """Group chunks into segments in token-id order: chunk starts per segment.

    ``spans`` holds per chunk ``(start, min id, max id, ids increasing)``.  Chunks whose id ranges
    overlap share a segment (merged together); a store whose ids increase along it (every store
    bsig writes) has one chunk per segment, so the final merge streams chunk by chunk.
    """
    out: list[list[int]] = []
    hi = None
    for start, lo, top, _ in sorted(spans, key=lambda s: (s[1], s[0])):
        if hi is not None and lo <= hi:
            out[-1].append(start)
            hi = max(hi, top)
        else:
            out.append([start])
            hi = top
    return out


def allocate_ties(counts: Sequence[np.ndarray], bounds: K.TailBounds) -> tuple[list[np.ndarray], np.ndarray]:
    """How many at-boundary members each segment keeps, in id order; and each tail's total.

    ``counts`` holds per segment (in id order) the (2, 2B) members beyond / at the final boundary.
    The ``take`` lowest ids at a boundary are the first ``take`` met in id order, so segment ``i``
    keeps ``min(at_i, take − kept before)``.

    Raises
    ------
    KernelInputError
        When a tail does not come to exactly ``k`` (histograms and members from different data).
    """
    take = np.empty(2 * bounds.n_rows, dtype=np.int64)
    take[0::2], take[1::2] = bounds.low_take, bounds.high_take
    left = take.copy()
    total = np.zeros_like(take)
    out = []
    for c in counts:
        t = np.minimum(c[1], left)
        left -= t
        total += c[0] + t
        out.append(t)
    bad = np.flatnonzero(total != bounds.k)
    if bad.size:
        i = int(bad[0])
        raise K.KernelInputError(
            f"row {i // 2} {K.TAILS[i % 2]} tail: {int(total[i])} members != k={bounds.k}; "
            "histogram and members come from different data"
        )
    return out, total


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


def histogram_bins(coefficient: str, m: int) -> np.ndarray:
    """Score value of every histogram bin: γ (half-integers) for Thrush, η·Z for Pre-select."""
    offset, n_bins = K.lattice(coefficient, m)
    codes = np.arange(n_bins) - offset
    return codes / 2.0 if coefficient == "thrush" else codes
