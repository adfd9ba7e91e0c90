"""Screen merge: folding the chunks' results into exact tails, candidate arrays and null estimates.

Every merge here is order-free (sums, and unions with a token-id tie-break), so the result never
depends on chunking, scheduler or the order in which tasks finish.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bsig_array import kernels as K
from bsig_array.kernels.unique import sorted_unique

#: Names of the four member sets of a :class:`~bsig_array.kernels.TailMembers`.
MEMBER_SETS = ("low_beyond", "low_at", "high_beyond", "high_at")
#: Fold the chunks' at-boundary members into one part once this many are held (bounds driver memory).
COMPACT_EVERY = 8


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


def _narrow(mb: K.TailMembers) -> K.TailMembers:
    sets = (getattr(mb, name) for name in MEMBER_SETS)
    return K.TailMembers(*(dataclasses.replace(r, token=r.token.astype(np.int32)) for r in sets))


def _empty_rows(n_rows: int) -> K.RowSets:
    return K.RowSets(ptr=np.zeros(n_rows + 1, dtype=np.int64), token=np.empty(0, np.int64), code=np.empty(0, np.int32))


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


def candidate_union(token: np.ndarray, id_range: tuple[int, int] | None) -> np.ndarray:
    """Sorted distinct ids of ``token``; a mask over ``id_range`` when that is no bigger than sorting."""
    if id_range is not None:
        lo, hi = id_range
        if hi - lo + 1 <= 8 * token.size:  # the mask (1 B per id) costs at most the sort's copy (8 B per entry)
            mask = np.zeros(hi - lo + 1, dtype=bool)
            for row in token.reshape(-1, token.shape[-1]):  # row by row: no full-size temporary
                mask[row - lo] = True
            return np.flatnonzero(mask) + lo
    return sorted_unique(token)


class TailAccumulator:
    """Pass 2's running fold of the chunks' tail members and null counts, in bounded memory.

    Beyond-boundary members all end up in the tails, so their parts are kept as they arrive (no
    re-sorting); at-boundary members are folded every :data:`COMPACT_EVERY` parts, which drops the
    ones that can no longer be kept.  Held token ids are int32 when ``id_range`` (from pass 1) fits:
    the members are the largest thing the driver holds while the passes run.
    """

    def __init__(
        self, bounds: dict[str, K.TailBounds], n_null_rows: int, id_range: tuple[int, int] | None,
    ) -> None:
        info = np.iinfo(np.int32)
        self.bounds = bounds
        self.narrow = id_range is not None and info.min <= id_range[0] and id_range[1] <= info.max
        self.beyond: dict[str, list[K.TailMembers]] = {c: [] for c in bounds}
        self.at: dict[str, list[K.TailMembers]] = {c: [] for c in bounds}
        self.null = {c: np.zeros((n_null_rows, 4), dtype=np.int64) for c in bounds}

    def add(self, members: dict[str, K.TailMembers], null: dict[str, np.ndarray]) -> None:
        """Fold one chunk's members and null counts (per coefficient)."""
        for coef, bounds in self.bounds.items():
            mb = _narrow(members[coef]) if self.narrow else members[coef]
            empty = _empty_rows(bounds.n_rows)
            self.beyond[coef].append(K.TailMembers(mb.low_beyond, empty, mb.high_beyond, empty))
            self.at[coef].append(K.TailMembers(empty, mb.low_at, empty, mb.high_at))
            if len(self.at[coef]) >= COMPACT_EVERY:
                self.at[coef] = [compact_members(self.at[coef], bounds)]
            self.null[coef] += null[coef]

    def parts(self) -> dict[str, list[K.TailMembers]]:
        """Parts per coefficient for :func:`~bsig_array.kernels.merge_tails` (the fold is consumed)."""
        out = {c: self.beyond[c] + [compact_members(self.at[c], b)] for c, b in self.bounds.items()}
        self.beyond = {c: [] for c in self.bounds}
        self.at = {c: [] for c in self.bounds}
        return out


def final_tails(
    parts: dict[str, list[K.TailMembers]], bounds: dict[str, K.TailBounds], m: int, k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact tails of every coefficient: token ids, scores (coefficient, B, 2, k) and thresholds (coefficient, B, 2).

    Filled one coefficient at a time, dropping each one's members once merged: the candidate arrays
    are the largest thing the driver holds (see :func:`~bsig_array.runtime.memory.screen_driver_bytes`).
    """
    coefficients = list(bounds)
    B = next(iter(bounds.values())).n_rows
    token = np.empty((len(coefficients), B, 2, k), dtype=np.int64)
    score = np.empty((len(coefficients), B, 2, k), dtype=np.float64)
    threshold = np.empty((len(coefficients), B, 2), dtype=np.float64)
    for i, coef in enumerate(coefficients):
        sel = K.merge_tails(parts.pop(coef), bounds[coef])
        scale = K.code_scale(coef, m)
        token[i] = sel.token
        np.divide(sel.code, scale, out=score[i])
        threshold[i, :, 0] = bounds[coef].low_code / scale
        threshold[i, :, 1] = bounds[coef].high_code / scale
        del sel
    return token, score, threshold


def histogram_bins(coefficient: str, m: int) -> np.ndarray:
    """Score value of every histogram bin: γ (half-integers) for Thrush, η·Z for Pre-select."""
    offset, n_bins = K.lattice(coefficient, m)
    codes = np.arange(n_bins) - offset
    return codes / 2.0 if coefficient == "thrush" else codes
