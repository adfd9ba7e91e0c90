"""Both screening scores of a block at once (the screen stage's default: thrush and preselect)."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from bsig_array.kernels._checks import check_P, check_ties, check_Y
from bsig_array.kernels.backends import get_backend
from bsig_array.kernels.preselect import preselect_positions
from bsig_array.kernels.thrush import thrush_weights


def screen_codes(P: Any, Y: Any, ties: str = "average", *, backend: str = "auto") -> dict:
    """Thrush and Pre-select codes of every token for every benchmark, from one pass over ``P``.

    Equal to ``{"thrush": thrush_codes(P, Y, ties), "preselect": preselect_codes(P, Y)}``; the
    numba backend shares the pairwise comparisons between the ranks and the Pre-select bitmasks.

    Parameters
    ----------
    P : array (m, n), float16/32/64
        NLLs (no NaN).
    Y : array (B, m)
        Benchmark scores per row.
    ties : {"average", "first"}
        Rank ties in ``P`` for Thrush (Pre-select counts tied pairs as 0 either way).
    backend : {"auto", "numpy", "numba", "cupy"}

    Returns
    -------
    dict with ``"thrush"`` and ``"preselect"``: arrays (B, n) int32.
    """
    m, _ = check_P(P)
    check_Y(Y, m)
    check_ties(ties)
    impl = get_backend(backend, P)
    xp = array_namespace(P)
    C, pos = thrush_weights(Y), preselect_positions(Y)
    if array_namespace(C) is not xp:
        C, pos = xp.asarray(C), xp.asarray(pos)
    thrush, preselect = impl.screen_codes(P, C, pos, ties)
    return {"thrush": thrush, "preselect": preselect}
