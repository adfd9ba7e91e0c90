"""Result types of the tail kernels: boundaries, per-chunk members and merged selections.

Shared by :mod:`.tails` and every backend module (which fill them), so they live apart from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bsig_array.schema import TAILS  # noqa: F401  (re-exported: the kernels' tail order)


@dataclass(frozen=True)
class TailBounds:
    """Per-row tail boundaries (numpy int64 arrays of shape (B,)).

    Tokens with ``code < low_code`` are all kept, plus the ``low_take`` lowest token ids with
    ``code == low_code``; symmetrically tokens with ``code > high_code`` plus ``high_take`` at
    ``high_code``.  ``k`` tokens per tail in all.
    """

    low_code: np.ndarray
    low_take: np.ndarray
    high_code: np.ndarray
    high_take: np.ndarray
    k: int

    @property
    def n_rows(self) -> int:
        return int(self.low_code.shape[0])


@dataclass(frozen=True)
class RowSets:
    """Ragged per-row token sets in CSR form: row ``i`` is ``token[ptr[i]:ptr[i+1]]``.

    ``token`` (int64) and ``code`` (int32) are in the backend's array namespace; ``ptr`` (int64,
    shape (B+1,)) too.  Within a row, tokens beyond a boundary keep the order of the chunk's
    ``token_ids``; tokens at a boundary are sorted by id.
    """

    ptr: Any
    token: Any
    code: Any

    def row(self, i: int) -> tuple[Any, Any]:
        """Token ids and codes of row ``i``."""
        lo, hi = int(self.ptr[i]), int(self.ptr[i + 1])
        return self.token[lo:hi], self.code[lo:hi]


@dataclass(frozen=True)
class TailMembers:
    """One chunk's tail members: strictly beyond each boundary, and at it.

    ``low_at``/``high_at`` hold at most ``take`` tokens per row: the lowest ids of this chunk at the
    boundary code (only those can survive the merge across chunks).
    """

    low_beyond: RowSets
    low_at: RowSets
    high_beyond: RowSets
    high_at: RowSets


@dataclass(frozen=True)
class TailSelection:
    """The final tails: ``token`` (B, 2, k) int64 sorted by id within each tail, ``code`` (B, 2, k)
    int32; axis 1 is ``TAILS = ("low", "high")``."""

    token: np.ndarray
    code: np.ndarray
